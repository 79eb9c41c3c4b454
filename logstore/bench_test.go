package logstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkSave measures Save throughput with synchronous=normal for 1, 8
// and 64 concurrent savers, as the milter's sessions would call it. The
// saves/commit metric shows how much group commit batched.
func BenchmarkSave(b *testing.B) {
	for _, savers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("savers=%d", savers), func(b *testing.B) {
			s := openTest(b, Options{Synchronous: "normal"})
			tmpl := fullRecord()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for range savers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						r := *tmpl // ID 0: each save inserts a row
						if err := s.Save(b.Context(), &r); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "saves/commit")
		})
	}
}
