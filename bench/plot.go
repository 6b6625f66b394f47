package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WritePlot draws r as an SVG of two panels: token generation tokens/s against batch size (one
// line per KV depth, log₂ batch axis), and tokens/s against context depth (one line per batch size,
// and prompt processing). Points are the mean over repetitions, with error bars of ± one sample
// standard deviation. It uses gonum/plot: axes, ticks, legends and scales are what a plotting
// library is for, and hand-written SVG for them would be more code than the benchmark.
func (r *Report) WritePlot(w io.Writer) error {
	left, err := r.plotVsBatch()
	if err != nil {
		return err
	}
	right, err := r.plotVsDepth()
	if err != nil {
		return err
	}
	c := vgsvg.New(plotWidth, plotHeight)
	drawPanels(draw.New(c), left, right)
	_, err = c.WriteTo(w)
	return err
}

// The plot's size.
const plotWidth, plotHeight = 11 * vg.Inch, 4.5 * vg.Inch

// drawPanels draws the two plots side by side on dc.
func drawPanels(dc draw.Canvas, left, right *plot.Plot) {
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 3, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{left, right}}, tiles, dc)
	left.Draw(canvases[0][0])
	right.Draw(canvases[0][1])
}

// series is one line: x → (mean, stddev) of tokens/s.
type series struct {
	name string
	pts  []point
}

type point struct{ x, y, sd float64 }

func (s series) xyErrs() (plotter.XYs, plotter.YErrors) {
	slices.SortFunc(s.pts, func(a, b point) int { return cmp.Compare(a.x, b.x) })
	xy := make(plotter.XYs, len(s.pts))
	errs := make(plotter.YErrors, len(s.pts))
	for i, p := range s.pts {
		xy[i].X, xy[i].Y = p.x, p.y
		errs[i].Low, errs[i].High = p.sd, p.sd
	}
	return xy, errs
}

// errXYs carries points and their error bars for plotter.NewYErrorBars.
type errXYs struct {
	plotter.XYs
	plotter.YErrors
}

func (r *Report) title() string {
	return fmt.Sprintf("%s %s on %s", r.Model.Name, r.Model.DType, r.Backend)
}

func (r *Report) plotVsBatch() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = r.title() + ": decode"
	p.X.Label.Text = "batch size (sequences decoding together)"
	p.Y.Label.Text = "tokens/s"
	byDepth := map[int]*series{}
	var depths []int
	var batches []float64
	for _, res := range r.Results {
		if res.Kind != "tg" {
			continue
		}
		s := byDepth[res.Depth]
		if s == nil {
			s = &series{name: fmt.Sprintf("tg%d, depth %d", r.Settings.Gen, res.Depth)}
			byDepth[res.Depth] = s
			depths = append(depths, res.Depth)
		}
		s.pts = append(s.pts, point{float64(res.Batch), res.TokS.Mean, res.TokS.Stddev})
		if !slices.Contains(batches, float64(res.Batch)) {
			batches = append(batches, float64(res.Batch))
		}
	}
	slices.Sort(depths)
	slices.Sort(batches)
	if len(batches) > 1 && batches[0] > 0 {
		p.X.Scale = plot.LogScale{}
		var ticks plot.ConstantTicks
		for _, b := range batches {
			ticks = append(ticks, plot.Tick{Value: b, Label: fmt.Sprint(b)})
		}
		p.X.Tick.Marker = ticks
	}
	for i, d := range depths {
		if err := addSeries(p, *byDepth[d], i); err != nil {
			return nil, err
		}
	}
	p.Y.Min = 0
	p.Legend.Top, p.Legend.Left = true, true
	return p, nil
}

func (r *Report) plotVsDepth() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = r.title() + ": by context depth"
	p.X.Label.Text = "KV depth (cached positions)"
	p.Y.Label.Text = "tokens/s"
	var all []series
	pp := series{name: fmt.Sprintf("pp%d", r.Settings.Prompt)}
	byBatch := map[int]*series{}
	var batches []int
	for _, res := range r.Results {
		pt := point{float64(res.Depth), res.TokS.Mean, res.TokS.Stddev}
		if res.Kind == "pp" {
			pp.pts = append(pp.pts, pt)
			continue
		}
		s := byBatch[res.Batch]
		if s == nil {
			s = &series{name: fmt.Sprintf("tg%d, batch %d", r.Settings.Gen, res.Batch)}
			byBatch[res.Batch] = s
			batches = append(batches, res.Batch)
		}
		s.pts = append(s.pts, pt)
	}
	if len(pp.pts) > 0 {
		all = append(all, pp)
	}
	slices.Sort(batches)
	for _, b := range batches {
		all = append(all, *byBatch[b])
	}
	for i, s := range all {
		if err := addSeries(p, s, i); err != nil {
			return nil, err
		}
	}
	p.Y.Min = 0
	p.Legend.Top = true
	return p, nil
}

func addSeries(p *plot.Plot, s series, i int) error {
	xy, errs := s.xyErrs()
	line, pts, err := plotter.NewLinePoints(xy)
	if err != nil {
		return err
	}
	line.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
	pts.Shape = plotutil.Shape(i)
	bars, err := plotter.NewYErrorBars(errXYs{xy, errs})
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(i)
	p.Add(line, pts, bars)
	p.Legend.Add(s.name, line, pts)
	return nil
}
