//! Measuring: the recorder of medians, paired runs of a measurement and its baseline, the name filter, Criterion groups.

#[allow(unused_imports)]
use super::*;

/// Per-measurement timings (element rate of each criterion sample), for the closing summary.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) samples: RefCell<BTreeMap<String, Vec<f64>>>,
    pub(super) sample_size: RefCell<BTreeMap<String, usize>>,
    pub(super) pairs: RefCell<Vec<Pair>>,
}

impl Recorder {
    pub(super) fn push(&self, id: &str, elements: u64, took: Duration) {
        self.samples
            .borrow_mut()
            .entry(id.to_owned())
            .or_default()
            .push(elements as f64 / took.as_secs_f64().max(1e-12));
    }

    /// Median element rate over the measurement samples (criterion runs the routine for the
    /// warm-up first, then once per sample: the last `sample_size` entries are the samples).
    pub(super) fn median(&self, id: &str) -> Option<f64> {
        let all = self.samples.borrow();
        let v = all.get(id)?;
        let n = self
            .sample_size
            .borrow()
            .get(id)
            .copied()
            .unwrap_or(v.len());
        Some(median(v[v.len().saturating_sub(n)..].to_vec()))
    }
}

pub(super) fn median(mut s: Vec<f64>) -> f64 {
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The benchmark filter given on the command line (criterion's positional argument), so the
/// interleaved rounds of benchmarks that were filtered out are skipped too.
pub(super) fn filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" || a == "--list" || a == "--exact" || a == "--quiet" {
            continue;
        }
        if a.starts_with("--") {
            if !a.contains('=') {
                args.next();
            }
            continue;
        }
        return Some(a);
    }
    None
}

/// The same-run ratio on a noisy machine: `rounds` rounds, each timing the baseline and the
/// vault back to back (alternating which goes first), so both see the same load; the ratio
/// reported is the median of the per-round ratios. `id` is the vault side's criterion id (for
/// the command-line filter).
#[allow(clippy::too_many_arguments)]
pub(super) fn paired(
    rec: &Recorder,
    id: &str,
    label: &str,
    unit: &'static str,
    target: &'static str,
    rounds: usize,
    iters: (u64, u64),
    ours: Run<'_>,
    base: Run<'_>,
) {
    if filter().is_some_and(|f| !id.contains(f.as_str())) {
        return;
    }
    let rate = |(n, d): (u64, Duration)| n as f64 / d.as_secs_f64().max(1e-12);
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let b = rate(base(iters.1));
            (rate(ours(iters.0)), b)
        } else {
            let a = rate(ours(iters.0));
            (a, rate(base(iters.1)))
        };
        out.push((a, b));
    }
    rec.pairs
        .borrow_mut()
        .push((label.to_owned(), unit, target, out));
}

/// Registers `id` in `g`; `run(iters)` returns (elements done, time measured).
pub(super) fn measure(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rec: &Recorder,
    id: &str,
    elements: u64,
    sample_size: usize,
    run: Run<'_>,
) {
    let full = format!("{}/{id}", group_name(g));
    g.sample_size(sample_size);
    g.throughput(Throughput::Elements(elements));
    rec.sample_size
        .borrow_mut()
        .insert(full.clone(), sample_size);
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let (done, took) = run(iters);
            rec.push(&full, done, took);
            took
        })
    });
}

pub(super) fn group_name(_: &BenchmarkGroup<'_, WallTime>) -> String {
    GROUP.with(|g| g.borrow().clone())
}

pub(super) fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    GROUP.with(|g| *g.borrow_mut() = name.to_owned());
    c.benchmark_group(name)
}
