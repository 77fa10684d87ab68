package add_network_process

import (
	"github.com/elastic/elastic-agent-libs/monitoring"

	"github.com/netprocbeat/netprocbeat/internal/procs"
	"github.com/netprocbeat/netprocbeat/internal/tracker"
)

// registerMetrics publishes the shared watchers' counters under
// add_network_process in the beat's stats registry (netprocbeat's /stats
// with http.enabled). Counters are summed over watchers; there is one per
// distinct host_path and cache policy, usually exactly one. NewFunc returns
// the existing variable on a second call, so registering is idempotent.
func registerMetrics(reg *monitoring.Registry) {
	monitoring.NewFunc(reg, processorName, func(_ monitoring.Mode, v monitoring.Visitor) {
		var sum procs.Stats
		var tsum tracker.Stats
		var lastRescanNs int64
		watchers, trackers, eventDriven := 0, 0, 0
		procs.EachShared(func(_ string, st procs.Stats, fallback procs.OwnerSource) {
			if ts, ok := fallback.(interface{ Stats() tracker.Stats }); ok { // trackerSource, trackerClockSource
				trackers++
				t := ts.Stats()
				tsum.Events += t.Events
				tsum.Lost += t.Lost
				tsum.Missed += t.Missed
				tsum.Evicted += t.Evicted
				tsum.Expired += t.Expired
				tsum.Ambiguous += t.Ambiguous
				tsum.Unsure += t.Unsure
				tsum.Entries += t.Entries
				tsum.CPUShare += t.CPUShare
				tsum.Programs = append(tsum.Programs, t.Programs...)
			}
			watchers++
			sum.Lookups += st.Lookups
			sum.NotLocal += st.NotLocal
			sum.Hits += st.Hits
			sum.Misses += st.Misses
			sum.NegativeHits += st.NegativeHits
			sum.Rescans += st.Rescans
			sum.Errors += st.Errors
			sum.WaitTimeouts += st.WaitTimeouts
			sum.TrackerHits += st.TrackerHits
			sum.ResolveHits += st.ResolveHits
			sum.Verifications += st.Verifications
			sum.VerifyFailures += st.VerifyFailures
			sum.ExecChanges += st.ExecChanges
			sum.UnansweredVerify += st.UnansweredVerify
			sum.UnansweredAmbiguous += st.UnansweredAmbiguous
			sum.UnansweredStartedAfter += st.UnansweredStartedAfter
			sum.UnansweredNAT += st.UnansweredNAT
			sum.UnansweredNATUnchecked += st.UnansweredNATUnchecked
			sum.NATQueries += st.NATQueries
			sum.NATTranslated += st.NATTranslated
			sum.NATHits += st.NATHits
			sum.NATErrors += st.NATErrors
			sum.NATBudgetExhausted += st.NATBudgetExhausted
			sum.NATUnavailable += st.NATUnavailable
			sum.LearnedHits += st.LearnedHits
			sum.FeedMisses += st.FeedMisses
			sum.Learned += st.Learned
			if st.EventDriven {
				eventDriven++
			}
			sum.Sockets += st.Sockets
			sum.Processes += st.Processes
			sum.NegativeCache += st.NegativeCache
			sum.Ambiguous += st.Ambiguous
			sum.Namespaces += st.Namespaces
			lastRescanNs = max(lastRescanNs, st.LastRescan.Nanoseconds())
		})
		v.OnRegistryStart()
		defer v.OnRegistryFinished()
		monitoring.ReportInt(v, "watchers", int64(watchers))
		monitoring.ReportInt(v, "lookups", int64(sum.Lookups))
		monitoring.ReportInt(v, "not_local", int64(sum.NotLocal))
		monitoring.ReportInt(v, "hits", int64(sum.Hits))
		monitoring.ReportInt(v, "misses", int64(sum.Misses))
		monitoring.ReportInt(v, "negative_hits", int64(sum.NegativeHits))
		monitoring.ReportInt(v, "rescans", int64(sum.Rescans))
		monitoring.ReportInt(v, "errors", int64(sum.Errors))
		monitoring.ReportInt(v, "wait_timeouts", int64(sum.WaitTimeouts))
		monitoring.ReportInt(v, "rescan_last_ns", lastRescanNs)
		monitoring.ReportInt(v, "tracker_hits", int64(sum.TrackerHits))
		monitoring.ReportInt(v, "resolve_hits", int64(sum.ResolveHits))
		monitoring.ReportInt(v, "netns_ambiguous", sum.Ambiguous)
		monitoring.ReportInt(v, "netns_foreign", sum.Namespaces)
		monitoring.ReportInt(v, "verifications", int64(sum.Verifications))
		monitoring.ReportInt(v, "verify_failures", int64(sum.VerifyFailures))
		monitoring.ReportInt(v, "exec_changes", int64(sum.ExecChanges))
		monitoring.ReportInt(v, "learned_hits", int64(sum.LearnedHits))
		monitoring.ReportInt(v, "feed_misses", int64(sum.FeedMisses))
		monitoring.ReportInt(v, "event_driven", int64(eventDriven))
		monitoring.ReportNamespace(v, "unanswered", func() {
			monitoring.ReportInt(v, "verify_failed", int64(sum.UnansweredVerify))
			monitoring.ReportInt(v, "ambiguous_listener", int64(sum.UnansweredAmbiguous))
			monitoring.ReportInt(v, "started_after_event", int64(sum.UnansweredStartedAfter))
			monitoring.ReportInt(v, "nat_no_owner", int64(sum.UnansweredNAT))
			monitoring.ReportInt(v, "nat_unchecked", int64(sum.UnansweredNATUnchecked))
		})
		monitoring.ReportNamespace(v, "nat", func() {
			monitoring.ReportInt(v, "queries", int64(sum.NATQueries))
			monitoring.ReportInt(v, "translated", int64(sum.NATTranslated))
			monitoring.ReportInt(v, "hits", int64(sum.NATHits))
			monitoring.ReportInt(v, "errors", int64(sum.NATErrors))
			monitoring.ReportInt(v, "budget_exhausted", int64(sum.NATBudgetExhausted))
			monitoring.ReportInt(v, "unavailable", sum.NATUnavailable)
		})
		monitoring.ReportNamespace(v, "cache", func() {
			monitoring.ReportInt(v, "sockets", sum.Sockets)
			monitoring.ReportInt(v, "processes", sum.Processes)
			monitoring.ReportInt(v, "negative", int64(sum.NegativeCache))
			monitoring.ReportInt(v, "learned", int64(sum.Learned))
		})
		monitoring.ReportNamespace(v, "tracker", func() {
			monitoring.ReportInt(v, "loaded", int64(trackers))
			for _, c := range []struct {
				name string
				n    uint64
			}{
				{"events", tsum.Events}, {"lost", tsum.Lost}, {"missed", tsum.Missed},
				{"evicted", tsum.Evicted}, {"expired", tsum.Expired},
				{"netns_ambiguous", tsum.Ambiguous}, {"entries", uint64(tsum.Entries)},
				{"unsure", tsum.Unsure},
			} {
				monitoring.ReportInt(v, c.name, int64(c.n))
			}
			monitoring.ReportFloat(v, "cpu_pct", 100*tsum.CPUShare)
			monitoring.ReportNamespace(v, "programs", func() {
				for _, p := range tracker.SumPrograms(tsum.Programs) {
					monitoring.ReportNamespace(v, p.Key(), func() {
						monitoring.ReportInt(v, "run_count", int64(p.RunCount))
						monitoring.ReportInt(v, "run_time_ns", int64(p.RunTime))
						monitoring.ReportInt(v, "missed", int64(p.Missed))
					})
				}
			})
		})
	})
}
