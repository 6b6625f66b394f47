package gpu

// A default-build check of the Go ↔ CUDA seam, which nothing else can check without a GPU: every
// kernel name the backend looks up exists in kernels/*.cu as an extern "C" __global__ function,
// and every b.launch call in gpu/*.go passes exactly that kernel's parameters, in order and with
// the right kinds (cuda.Ptr for a pointer, i32/cuda.I32 for an int, cuda.F32 for a float). A
// mismatch would otherwise be found only on the device (as a wrong result or a fault, or, on
// drivers ≥ 12.4, a launch error).

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// cuSource is the preprocessed text of kernels/*.cu and *.cuh: comments removed, continuation
// lines joined, kernel-defining macros (DECODE_ENTRY, GEMV_ENTRY) expanded.
type cuSource struct {
	text    string
	defines map[string]string // object-like macros: name → replacement text
}

var (
	reFuncMacro = regexp.MustCompile(`(?m)^[ \t]*#define[ \t]+(\w+)\(([^)]*)\)[ \t]*(.*)$`)
	reObjMacro  = regexp.MustCompile(`(?m)^[ \t]*#define[ \t]+(\w+)[ \t]+(.+)$`)
	reKernel    = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^()]*(?:\([^()]*\))?[^()]*\)\s*)?(\w+)\s*\(([^)]*)\)`)
	reComment   = regexp.MustCompile(`(?s)//[^\n]*|/\*.*?\*/`)
)

func readCU(t *testing.T) cuSource {
	t.Helper()
	dir := filepath.Join("..", "kernels")
	paths, _ := filepath.Glob(filepath.Join(dir, "*.cu"))
	hdrs, _ := filepath.Glob(filepath.Join(dir, "*.cuh"))
	paths = append(paths, hdrs...)
	if len(paths) == 0 {
		t.Skipf("no CUDA sources in %s", dir)
	}
	sort.Strings(paths)
	var all strings.Builder
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := reComment.ReplaceAllString(string(b), "")
		s = strings.ReplaceAll(s, "\\\n", " ")
		all.WriteString(s)
		all.WriteString("\n")
	}
	text := all.String()
	src := cuSource{defines: map[string]string{}}
	for _, m := range reObjMacro.FindAllStringSubmatch(text, -1) {
		src.defines[m[1]] = strings.TrimSpace(m[2])
	}
	// Expand the function-like macros that define kernels at their top-level invocations.
	for _, m := range reFuncMacro.FindAllStringSubmatch(text, -1) {
		name, body := m[1], m[3]
		if !strings.Contains(body, `extern "C"`) {
			continue
		}
		params := strings.Split(m[2], ",")
		inv := regexp.MustCompile(`(?m)^[ \t]*` + name + `\(([^()]*)\)[ \t]*;?[ \t]*$`)
		text = inv.ReplaceAllStringFunc(text, func(call string) string {
			args := strings.Split(inv.FindStringSubmatch(call)[1], ",")
			if len(args) != len(params) {
				t.Fatalf("macro %s: invocation %q has %d arguments, want %d", name, call, len(args), len(params))
			}
			out := body
			for i, p := range params {
				re := regexp.MustCompile(`\b` + regexp.QuoteMeta(strings.TrimSpace(p)) + `\b`)
				out = re.ReplaceAllLiteralString(out, strings.TrimSpace(args[i]))
			}
			return regexp.MustCompile(`\s*##\s*`).ReplaceAllString(out, "")
		})
	}
	// Drop the #define lines themselves (a kernel macro's body is no kernel).
	src.text = regexp.MustCompile(`(?m)^[ \t]*#define.*$`).ReplaceAllString(text, "")
	return src
}

// paramKind classifies one C parameter declaration: 'p' pointer, 'i' int, 'u' unsigned,
// 'f' float, 'l' 64-bit integer; 0 for anything else (a struct by value is not allowed).
func paramKind(decl string) byte {
	if strings.Contains(decl, "*") {
		return 'p'
	}
	f := strings.Fields(decl)
	if len(f) < 2 {
		return 0
	}
	var typ []string
	for _, w := range f[:len(f)-1] {
		if w != "const" && w != "__restrict__" {
			typ = append(typ, w)
		}
	}
	switch strings.Join(typ, " ") {
	case "int", "int32_t":
		return 'i'
	case "unsigned", "unsigned int", "uint32_t":
		return 'u'
	case "float":
		return 'f'
	case "int64_t", "uint64_t", "long long", "unsigned long long", "size_t":
		return 'l'
	}
	return 0
}

// kernels returns every extern "C" __global__ function: name → parameter kinds.
func (s cuSource) kernels(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range reKernel.FindAllStringSubmatch(s.text, -1) {
		name := m[1]
		var kinds []byte
		if p := strings.TrimSpace(m[2]); p != "" && p != "void" {
			for _, decl := range strings.Split(p, ",") {
				k := paramKind(decl)
				if k == 0 {
					t.Errorf("kernel %s: parameter %q is not a pointer or a 32/64-bit scalar", name, strings.TrimSpace(decl))
				}
				kinds = append(kinds, k)
			}
		}
		if prev, dup := out[name]; dup && prev != string(kinds) {
			t.Errorf("kernel %s is defined twice with different parameters", name)
		}
		out[name] = string(kinds)
	}
	return out
}

// eval evaluates an integer C expression of literals, object-like macros, + - * / and parentheses.
func (s cuSource) eval(expr string, depth int) (int64, error) {
	if depth > 16 {
		return 0, fmt.Errorf("macro recursion in %q", expr)
	}
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", expr, err)
	}
	var ev func(ast.Expr) (int64, error)
	ev = func(e ast.Expr) (int64, error) {
		switch e := e.(type) {
		case *ast.BasicLit:
			return strconv.ParseInt(e.Value, 0, 64)
		case *ast.ParenExpr:
			return ev(e.X)
		case *ast.Ident:
			d, ok := s.defines[e.Name]
			if !ok {
				return 0, fmt.Errorf("no #define %s", e.Name)
			}
			return s.eval(d, depth+1)
		case *ast.BinaryExpr:
			x, err := ev(e.X)
			if err != nil {
				return 0, err
			}
			y, err := ev(e.Y)
			if err != nil {
				return 0, err
			}
			switch e.Op {
			case token.ADD:
				return x + y, nil
			case token.SUB:
				return x - y, nil
			case token.MUL:
				return x * y, nil
			case token.QUO:
				if y != 0 {
					return x / y, nil
				}
			}
		}
		return 0, fmt.Errorf("cannot evaluate %q", expr)
	}
	return ev(e)
}

// fieldNames runs kernelFuncs.table and returns, for each field of kernelFuncs, the kernel names
// its slots hold. It fails the test for a slot that no name fills (a nil *cuda.Function at
// launch time).
func fieldNames(t *testing.T) (map[string][]string, map[string]*string) {
	t.Helper()
	var k kernelFuncs[string]
	tab := k.table()
	for name, p := range tab {
		if *p != "" {
			t.Errorf("kernels %q and %q share a slot", *p, name)
		}
		*p = name
	}
	out := map[string][]string{}
	v := reflect.ValueOf(k)
	var walk func(field string, v reflect.Value)
	walk = func(field string, v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			if v.String() == "" {
				t.Errorf("kernelFuncs.%s has a slot that table() never fills", field)
			}
			out[field] = append(out[field], v.String())
		case reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(field, v.Index(i))
			}
		default:
			t.Fatalf("kernelFuncs.%s: unexpected kind %v", field, v.Kind())
		}
	}
	for i := 0; i < v.NumField(); i++ {
		walk(v.Type().Field(i).Name, v.Field(i))
	}
	return out, tab
}

func TestKernelNamesExist(t *testing.T) {
	cu := readCU(t)
	ks := cu.kernels(t)
	if len(ks) < 40 {
		t.Fatalf("found only %d extern \"C\" kernels in kernels/*.cu: is the parser broken?", len(ks))
	}
	_, tab := fieldNames(t)
	var names []string
	for name := range tab {
		names = append(names, name)
		if _, ok := ks[name]; !ok {
			t.Errorf("the backend looks up kernel %q, which kernels/*.cu does not define", name)
		}
	}
	// The committed sources are the spec; a fatbin built here must hold every kernel in every
	// SASS image (a stale fatbin, or a kernel missing for one architecture, fails here).
	fat, err := os.ReadFile(filepath.Join("..", "kernels", "llamacu.fatbin"))
	if err != nil {
		t.Logf("no fatbin to check (%v): run make kernels", err)
		return
	}
	images := fatbinImages(t, fat)
	if images == nil {
		return
	}
	sort.Strings(names)
	for _, name := range names {
		n := 0
		for _, img := range images {
			if bytes.Contains(img, []byte("\x00"+name+"\x00")) {
				n++
			}
		}
		if n < len(images) {
			t.Errorf("kernels/llamacu.fatbin: kernel %q is in %d of its %d SASS images (stale fatbin? run make kernels)", name, n, len(images))
		}
	}
}

// fatbinImages returns the SASS images (cubins) of a fatbin: the file's own bytes split at each
// ELF header when they are stored as they are, or, when fatbinary has compressed them (it does
// with large images: 12 MB per architecture did, 10 MB did not), the cubins that
// `cuobjdump -xelf all` extracts. nil (logged) if compressed and cuobjdump is not on the PATH.
func fatbinImages(t *testing.T, fat []byte) [][]byte {
	t.Helper()
	magic := []byte("\x7fELF")
	if bytes.Contains(fat, []byte("\x00rmsnorm_f32\x00")) { // uncompressed
		var images [][]byte
		for i := bytes.Index(fat, magic); i >= 0; {
			j := bytes.Index(fat[i+1:], magic)
			if j < 0 {
				images = append(images, fat[i:])
				break
			}
			images = append(images, fat[i:i+1+j])
			i += 1 + j
		}
		return images
	}
	tool, err := exec.LookPath("cuobjdump")
	if err != nil {
		t.Logf("kernels/llamacu.fatbin holds compressed images and cuobjdump is not on the PATH: kernel names not checked")
		return nil
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "llamacu.fatbin")
	if err := os.WriteFile(path, fat, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, "-xelf", "all", path)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cuobjdump -xelf all: %v\n%s", err, out)
	}
	cubins, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
	if want := bytes.Count(fat, magic); len(cubins) != want {
		t.Fatalf("cuobjdump extracted %d cubins from a fatbin with %d ELF images", len(cubins), want)
	}
	var images [][]byte
	for _, c := range cubins {
		b, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, b)
	}
	return images
}

// launchSite is one b.launch call: the kernelFuncs fields it may launch and its argument kinds.
type launchSite struct {
	pos    string
	fields []string
	kinds  string
}

// launchSites parses gpu/*.go (whatever their build tags) and returns every b.launch call.
func launchSites(t *testing.T) []launchSite {
	t.Helper()
	paths, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	var sites []launchSite
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pos := fset.Position(call.Pos()).String()
				switch {
				// graph.go's flush and runOps replay launches recorded by Backend.launch (checked
				// at their call sites) and launch graphs; launchNow issues both.
				case (sel.Sel.Name == "Launch" || sel.Sel.Name == "LaunchPDL") && fn.Name.Name != "launchNow" && fn.Name.Name != "flush":
					t.Errorf("%s: launch kernels through Backend.launch, which this test checks", pos)
				case sel.Sel.Name == "launch" && len(call.Args) >= 3:
					fields, err := kernelFields(fn, call.Args[0], 0)
					if err != nil {
						t.Errorf("%s: kernel: %v", pos, err)
						return true
					}
					kinds, err := argKinds(fn, call.Args[3:], call.Ellipsis.IsValid())
					if err != nil {
						t.Errorf("%s: arguments: %v", pos, err)
						return true
					}
					sites = append(sites, launchSite{pos, fields, kinds})
				}
				return true
			})
		}
	}
	return sites
}

// assigned returns the expressions assigned in fn to the local variable that v names (x := e,
// x = e, var x = e, and the matching element of a multiple assignment), told apart from other
// variables of the same name in other scopes by the parser's object resolution.
func assigned(fn *ast.FuncDecl, v *ast.Ident) []ast.Expr {
	same := func(id *ast.Ident) bool { return id.Name == v.Name && id.Obj != nil && id.Obj == v.Obj }
	var out []ast.Expr
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.AssignStmt:
			if len(s.Lhs) == len(s.Rhs) {
				for i, l := range s.Lhs {
					if id, ok := l.(*ast.Ident); ok && same(id) {
						out = append(out, s.Rhs[i])
					}
				}
			}
		case *ast.ValueSpec:
			if len(s.Names) == len(s.Values) {
				for i, id := range s.Names {
					if same(id) {
						out = append(out, s.Values[i])
					}
				}
			}
		}
		return true
	})
	return out
}

// kernelFields resolves a launch's kernel expression (b.k.field, b.k.field[i][j], or a local
// variable assigned such expressions) to kernelFuncs field names.
func kernelFields(fn *ast.FuncDecl, e ast.Expr, depth int) ([]string, error) {
	if depth > 8 {
		return nil, fmt.Errorf("cannot resolve %T", e)
	}
	switch x := e.(type) {
	case *ast.IndexExpr:
		return kernelFields(fn, x.X, depth+1)
	case *ast.ParenExpr:
		return kernelFields(fn, x.X, depth+1)
	case *ast.SelectorExpr:
		if inner, ok := x.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "k" {
			return []string{x.Sel.Name}, nil
		}
	case *ast.Ident:
		var out []string
		for _, a := range assigned(fn, x) {
			fs, err := kernelFields(fn, a, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		if len(out) > 0 {
			slices.Sort(out)
			return slices.Compact(out), nil
		}
		return nil, fmt.Errorf("local %s is never assigned a kernel", x.Name)
	}
	return nil, fmt.Errorf("cannot resolve %s to a kernel of b.k", nodeType(e))
}

func nodeType(e ast.Expr) string { return fmt.Sprintf("%T", e) }

// argKinds classifies each launch argument: cuda.Ptr 'p', i32 / cuda.I32 'i', cuda.U32 'u',
// cuda.F32 'f', cuda.I64 / cuda.U64 'l'. It follows args... and elements of local []cuda.Arg
// literals (args[2]).
func argKinds(fn *ast.FuncDecl, args []ast.Expr, ellipsis bool) (string, error) {
	var kinds []byte
	var one func(e ast.Expr, depth int) error
	sliceLit := func(v *ast.Ident) (*ast.CompositeLit, error) {
		name := v.Name
		as := assigned(fn, v)
		if len(as) != 1 {
			return nil, fmt.Errorf("%s: want one []cuda.Arg literal assigned to it, found %d assignments", name, len(as))
		}
		cl, ok := as[0].(*ast.CompositeLit)
		if !ok {
			return nil, fmt.Errorf("%s is not a []cuda.Arg literal", name)
		}
		return cl, nil
	}
	one = func(e ast.Expr, depth int) error {
		if depth > 8 {
			return fmt.Errorf("cannot resolve argument")
		}
		switch x := e.(type) {
		case *ast.IndexExpr:
			id, ok := x.X.(*ast.Ident)
			lit, ok2 := x.Index.(*ast.BasicLit)
			if !ok || !ok2 {
				break
			}
			cl, err := sliceLit(id)
			if err != nil {
				return err
			}
			i, err := strconv.Atoi(lit.Value)
			if err != nil || i >= len(cl.Elts) {
				return fmt.Errorf("%s[%s] is outside its literal", id.Name, lit.Value)
			}
			return one(cl.Elts[i], depth+1)
		case *ast.CallExpr:
			name := ""
			switch f := x.Fun.(type) {
			case *ast.Ident:
				name = f.Name
			case *ast.SelectorExpr:
				if pkg, ok := f.X.(*ast.Ident); ok && pkg.Name == "cuda" {
					name = "cuda." + f.Sel.Name
				}
			}
			k, ok := map[string]byte{"cuda.Ptr": 'p', "i32": 'i', "cuda.I32": 'i', "cuda.U32": 'u',
				"cuda.F32": 'f', "cuda.I64": 'l', "cuda.U64": 'l'}[name]
			if ok {
				kinds = append(kinds, k)
				return nil
			}
		}
		return fmt.Errorf("cannot classify argument %s (build it with cuda.Ptr, i32, cuda.F32, … in place or in a local []cuda.Arg literal)", nodeType(e))
	}
	for i, a := range args {
		if ellipsis && i == len(args)-1 {
			id, ok := a.(*ast.Ident)
			if !ok {
				return "", fmt.Errorf("cannot resolve %s...", nodeType(a))
			}
			cl, err := sliceLit(id)
			if err != nil {
				return "", err
			}
			for _, e := range cl.Elts {
				if err := one(e, 0); err != nil {
					return "", err
				}
			}
			continue
		}
		if err := one(a, 0); err != nil {
			return "", err
		}
	}
	return string(kinds), nil
}

func TestLaunchArguments(t *testing.T) {
	cu := readCU(t)
	ks := cu.kernels(t)
	fields, _ := fieldNames(t)
	sites := launchSites(t)
	if len(sites) < 15 {
		t.Fatalf("found only %d b.launch calls in gpu/*.go: is the parser broken?", len(sites))
	}
	launched := map[string]bool{}
	for _, s := range sites {
		for _, f := range s.fields {
			names, ok := fields[f]
			if !ok {
				t.Errorf("%s: b.k.%s is not a field of kernelFuncs", s.pos, f)
				continue
			}
			launched[f] = true
			for _, name := range names {
				want, ok := ks[name]
				if !ok {
					continue // TestKernelNamesExist reports it
				}
				if s.kinds != want {
					t.Errorf("%s: launches %s with arguments %q, but the kernel takes %q (p pointer, i int, f float)", s.pos, name, s.kinds, want)
				}
			}
		}
	}
	for f := range fields {
		if !launched[f] {
			t.Errorf("kernelFuncs.%s (%v) is loaded but never launched", f, fields[f])
		}
	}
}

// TestKernelsBeginWithPDL: every kernel's first statement is common.cuh's pdl_begin(), the wait
// for the grids it depends on that makes programmatic dependent launch (Options.PDL) safe: a
// kernel launched with the attribute may start while the one before it still runs, and must not
// read or write before that wait. (Any kernel may be launched so; none may lack it.)
func TestKernelsBeginWithPDL(t *testing.T) {
	src := readCU(t)
	n := 0
	for _, loc := range reKernel.FindAllStringSubmatchIndex(src.text, -1) {
		name := src.text[loc[2]:loc[3]]
		rest := strings.TrimLeft(src.text[loc[1]:], " \t\n\\")
		if !strings.HasPrefix(rest, "{") {
			t.Errorf("kernel %s: no body after its parameters", name)
			continue
		}
		// pdl_begin_after(f) runs f (weight prefetches only) before the same wait.
		if first := strings.TrimLeft(rest[1:], " \t\n\\"); !strings.HasPrefix(first, "pdl_begin();") && !strings.HasPrefix(first, "pdl_begin_after([&] {") {
			t.Errorf("kernel %s does not begin with pdl_begin(); or pdl_begin_after([&] { … });", name)
		}
		n++
	}
	if n < 100 {
		t.Errorf("only %d kernel definitions found", n)
	}
}

// TestKernelConstants checks the Go copies of the kernels' compile-time constants (block sizes,
// shared-memory capacities) against the #defines they mirror.
func TestKernelConstants(t *testing.T) {
	cu := readCU(t)
	consts := map[string]int64{}
	paths, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, p := range paths {
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.INT {
							v, _ := strconv.ParseInt(lit.Value, 0, 64)
							consts[id.Name] = v
						}
					}
				}
			}
		}
	}
	for goName, cExpr := range map[string]string{
		"decThreads":       "DEC_THREADS",
		"decChunkMax":      "DEC_CHUNK_MAX",
		"decGMax":          "DEC_GMAX",
		"decHDMax":         "DEC_HD_MAX",
		"pfQuery":          "PF_BQ",
		"pfThreads":        "PF_THREADS",
		"pfHDMax":          "PF_HD_MAX",
		"pmQuery":          "PM_BQ",
		"pmThreads":        "PM_THREADS",
		"p4Query":          "P4_BQ",
		"p4Threads":        "P4_THREADS",
		"d4Tile":           "D4_BK",
		"d4Threads":        "D4_THREADS",
		"d4MergeMax":       "D4_MERGE_MAX",
		"d4Reduce":         "D4_REDUCE",
		"d4Direct":         "D4_DIRECT",
		"d4Merge":          "D4_MERGE",
		"gemvThreads":      "GEMV_THREADS",
		"gemvRowsPerBlock": "GEMV_ROWS_PER_BLOCK",
		"rmsnormMaxV":      "RMSNORM_MAXV",
		"ropeMaxHeadDim":   "2 * ROPE_MAX_HALF",
	} {
		got, ok := consts[goName]
		if !ok {
			t.Errorf("no integer constant %s in gpu/*.go", goName)
			continue
		}
		want, err := cu.eval(cExpr, 0)
		if err != nil {
			t.Errorf("%s: %v", goName, err)
			continue
		}
		if got != want {
			t.Errorf("gpu: %s = %d, but kernels/*.cu has %s = %d", goName, got, cExpr, want)
		}
	}
}
