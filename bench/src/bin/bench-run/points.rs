//! What a run measures: the points (connections × message size, depth, churn or an open
//! loop's rate) and one sample of one server at one point.

#[derive(Clone, Copy)]
pub(crate) struct Point {
    pub(crate) conns: usize,
    pub(crate) size: usize,
    pub(crate) depth: usize,
    /// Every request on a connection of its own (`bench-load --churn`).
    pub(crate) churn: bool,
    /// Requests per second of an open loop (`bench-load --rate`); 0: a closed loop.
    pub(crate) rate: u32,
}

impl Point {
    /// A closed loop: each connection keeps `depth` requests in flight.
    const fn closed(conns: usize, size: usize, depth: usize) -> Point {
        Point {
            conns,
            size,
            depth,
            churn: false,
            rate: 0,
        }
    }
}

/// Every point of a full run.
pub(crate) const POINTS: [Point; 9] = [
    Point::closed(1, 64, 1),
    Point::closed(64, 64, 1),
    Point::closed(256, 64, 1),
    Point::closed(64, 4096, 1),
    Point::closed(16, 65536, 1),
    Point::closed(64, 64, 16),
    // Not among the points: what accepting and closing cost.
    Point {
        churn: true,
        ..Point::closed(16, 64, 1)
    },
    // Not among the points: a steady moderate load, the server idle between
    // requests, which a closed loop (the ring kept busy) never shows. What matters here is
    // latency and CPU per request; every server keeps the rate.
    Point {
        rate: 50_000,
        ..Point::closed(64, 64, 1)
    },
    // Large messages, where an awaited write's extra wake-ups and sends show most (issue 35);
    // last, so that the quick run's picks by index stay the same.
    Point::closed(64, 1 << 20, 1),
];

impl Point {
    /// The name `--points` takes: `1x64`, `64x4k`, `64x64d16`...
    pub(crate) fn id(&self) -> String {
        let size = if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{}k", self.size / 1024)
        } else {
            self.size.to_string()
        };
        if self.rate > 0 && self.rate.is_multiple_of(1000) {
            format!("{}x{size}r{}k", self.conns, self.rate / 1000)
        } else if self.rate > 0 {
            format!("{}x{size}r{}", self.conns, self.rate)
        } else if self.churn {
            format!("{}x{size}churn", self.conns)
        } else if self.depth > 1 {
            format!("{}x{size}d{}", self.conns, self.depth)
        } else {
            format!("{}x{size}", self.conns)
        }
    }

    /// The point a name stands for, the inverse of [`id`](Point::id): `CONNSxSIZE` (a size in
    /// bytes, or KiB with `k`), then at most one of `dDEPTH` (pipelined), `churn` (a
    /// connection per request) or `rRATE` (an open loop at RATE requests a second, thousands
    /// with `k`): `1000x1k`, `64x64d4`, `64x64r120k`. Any such point can be run, not only
    /// those of a full run.
    pub(crate) fn parse(name: &str) -> Result<Point, String> {
        let bad = |why: &str| {
            format!("point {name:?}: {why} (e.g. 64x64, 64x4k, 64x64d16, 16x64churn, 64x64r50k)")
        };
        let (conns, rest) = name.split_once('x').ok_or_else(|| bad("no `x`"))?;
        let conns: usize = conns
            .parse()
            .map_err(|_| bad("connections are not a number"))?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (size, mut rest) = rest.split_at(digits);
        let mut size: usize = size.parse().map_err(|_| bad("no size"))?;
        if let Some(r) = rest.strip_prefix('k') {
            size = size
                .checked_mul(1024)
                .ok_or_else(|| bad("size too large"))?;
            rest = r;
        }
        let count = |s: &str, what: &str| -> Result<u64, String> {
            let (n, scale) = match s.strip_suffix('k') {
                Some(n) => (n, 1000),
                None => (s, 1),
            };
            n.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(&format!("{what} is not a positive number")))
        };
        let mut p = Point::closed(conns, size, 1);
        if rest == "churn" {
            p.churn = true;
        } else if let Some(d) = rest.strip_prefix('d') {
            p.depth = count(d, "the depth")? as usize;
        } else if let Some(r) = rest.strip_prefix('r') {
            p.rate = u32::try_from(count(r, "the rate")?).map_err(|_| bad("rate too large"))?;
        } else if !rest.is_empty() {
            return Err(bad(&format!("unknown suffix {rest:?}")));
        }
        if conns == 0 || size == 0 {
            return Err(bad("connections and size must be at least 1"));
        }
        Ok(p)
    }

    pub(crate) fn label(&self) -> String {
        let size = if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        if self.rate > 0 {
            format!("{} × {size}, open loop at {} req/s", self.conns, self.rate)
        } else if self.churn {
            format!("{} × {size}, a connection each", self.conns)
        } else if self.depth > 1 {
            format!("{} × {size}, {} deep", self.conns, self.depth)
        } else {
            format!("{} × {size}", self.conns)
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct Sample {
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    /// Server CPU seconds per 1M requests.
    pub(crate) user: f64,
    pub(crate) sys: f64,
    /// Syscalls per request, if perf could count them.
    pub(crate) syscalls: Option<f64>,
    pub(crate) peak_rss_kib: u64,
    /// The share of the server's and the load generator's CPUs that the hypervisor gave to
    /// other guests during the measured window (`steal` in /proc/stat), if known: a figure
    /// taken while it was high says more about the host than about the server.
    pub(crate) steal: Option<f64>,
}

impl Sample {
    /// Server CPU seconds per 1M requests, user and system together.
    pub(crate) fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_name_reads_back_to_its_point() {
        let extra = [
            Point::closed(1000, 1024, 1),
            Point::closed(3, 100_000, 7),
            Point {
                rate: 1500,
                ..Point::closed(2, 64, 1)
            },
        ];
        for p in POINTS.iter().chain(&extra) {
            let back = Point::parse(&p.id()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.id(), p.id());
            assert_eq!(
                (back.conns, back.size, back.depth, back.churn, back.rate),
                (p.conns, p.size, p.depth, p.churn, p.rate)
            );
        }
        let p = Point::parse("64x4kr120k").unwrap();
        assert_eq!((p.conns, p.size, p.rate), (64, 4096, 120_000));
    }

    #[test]
    fn a_malformed_point_is_refused_with_its_name() {
        for bad in [
            "",
            "64",
            "x64",
            "0x64",
            "64x0",
            "64x",
            "64x64d0",
            "64x64q",
            "64x64r",
            "64x64rk",
            "64x64d4churn",
            "64x64r99999999k",
            "-1x64",
        ] {
            let e = Point::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
