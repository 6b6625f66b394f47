package tp

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// runRanks runs f on every rank concurrently and returns the errors by rank.
func runRanks(cs []Comm, f func(c Comm) error) []error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(c)
		}()
	}
	wg.Wait()
	return errs
}

func TestAllReduceAndGather(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cs, err := NewInProcess(n)
			if err != nil {
				t.Fatal(err)
			}
			const length = 37 // not a multiple of any rank count: uneven chunks
			results := make([][]float32, n)
			gathered := make([][]float32, n)
			errs := runRanks(cs, func(c Comm) error {
				for round := 0; round < 50; round++ { // many rounds: the rendezvous must not mix them up
					buf := make([]float32, length)
					for i := range buf {
						buf[i] = float32(c.Rank()*1000 + i + round)
					}
					if err := c.AllReduceSum(buf); err != nil {
						return err
					}
					results[c.Rank()] = buf
					for i, v := range buf {
						want := float32(0)
						for r := 0; r < n; r++ {
							want += float32(r*1000 + i + round)
						}
						if v != want {
							return fmt.Errorf("round %d rank %d [%d] = %g, want %g", round, c.Rank(), i, v, want)
						}
					}
					dst := make([]float32, n*3)
					if err := c.AllGather(dst, []float32{float32(c.Rank()), float32(round), -1}); err != nil {
						return err
					}
					gathered[c.Rank()] = dst
					for r := 0; r < n; r++ {
						if dst[3*r] != float32(r) || dst[3*r+1] != float32(round) {
							return fmt.Errorf("gather round %d: %v", round, dst)
						}
					}
				}
				return c.Barrier()
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
		})
	}
}

// A rank that never shows up is named in the time-out error.
func TestBarrierTimeoutNamesMissingRank(t *testing.T) {
	cs, _ := NewInProcess(3)
	type timeoutBarrier interface{ BarrierTimeout(time.Duration) error }
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ { // rank 2 hangs
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = cs[r].(timeoutBarrier).BarrierTimeout(50 * time.Millisecond)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		var re *RankError
		if !errors.As(err, &re) || !errors.Is(err, ErrTimeout) || len(re.Missing) != 1 || re.Missing[0] != 2 {
			t.Errorf("rank %d: %v, want a time-out naming rank 2", r, err)
		}
	}
}

func TestCloseUnblocks(t *testing.T) {
	cs, _ := NewInProcess(2)
	done := make(chan error)
	go func() { done <- cs[0].AllReduceSum(make([]float32, 4)) }()
	time.Sleep(10 * time.Millisecond)
	cs[1].Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock a waiting rank")
	}
	if _, err := NewInProcess(0); !errors.Is(err, ErrDegree) {
		t.Errorf("NewInProcess(0): %v", err)
	}
}

func TestMismatchedLengthsFailOnEveryRank(t *testing.T) {
	cs, _ := NewInProcess(2)
	errs := runRanks(cs, func(c Comm) error { return c.AllReduceSum(make([]float32, 4+c.Rank())) })
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: no error", r)
		}
	}
}

func TestAllReduceDoesNotAllocate(t *testing.T) {
	cs, _ := NewInProcess(2)
	buf1 := make([]float32, 1024)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if cs[1].AllReduceSum(buf1) != nil {
				return
			}
		}
	}()
	buf0 := make([]float32, 1024)
	cs[0].AllReduceSum(buf0) // warm up the scratch
	allocs := testing.AllocsPerRun(50, func() { cs[0].AllReduceSum(buf0) })
	close(stop)
	cs[0].Close()
	if allocs != 0 {
		t.Errorf("AllReduceSum allocates %v times", allocs)
	}
}
