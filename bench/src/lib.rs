//! Shared pieces of the benchmark binaries: argument parsing, CPU pinning, a latency
//! histogram, and the byte pattern the load generator sends and verifies.

use std::collections::HashMap;
use std::time::Duration;

/// `--key value` pairs and bare `--flag`s.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    /// Parses the process arguments; a `--key` followed by another `--key` (or nothing) is a
    /// flag. `--help` prints `usage` and exits; a key not in `known`, or a word that is not a
    /// key's value, prints the error and `usage` and exits with 2, so that a mistyped option
    /// (`--round 3`) stops a 40-minute run before it starts rather than being ignored.
    pub fn parse(usage: &str, known: &[&str]) -> Args {
        match Args::from_words(std::env::args().skip(1).collect(), known) {
            Ok(a) => a,
            Err(None) => {
                println!("{usage}");
                std::process::exit(0)
            }
            Err(Some(e)) => {
                eprintln!("{e}\n{usage}");
                std::process::exit(2)
            }
        }
    }

    /// [`Args::parse`] on given words: `Err(None)` for `--help`, `Err(Some(message))` for a
    /// bad word.
    fn from_words(v: Vec<String>, known: &[&str]) -> Result<Args, Option<String>> {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let Some(k) = v[i].strip_prefix("--") else {
                if v[i] == "-h" {
                    return Err(None);
                }
                return Err(Some(format!("unexpected argument {:?}", v[i])));
            };
            if k == "help" {
                return Err(None);
            }
            if !known.contains(&k) {
                return Err(Some(format!("unknown option --{k}")));
            }
            if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                map.insert(k.to_owned(), v[i + 1].clone());
                i += 2;
            } else {
                map.insert(k.to_owned(), String::new());
                i += 1;
            }
        }
        Ok(Args { map })
    }

    /// The value of `--key`, parsed, or `default`. Exits with a message on a bad value.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("bad value for --{key}: {v:?}");
                std::process::exit(2)
            }),
        }
    }

    /// The string value of `--key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Whether `--key` was given.
    pub fn flag(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

/// Pins the calling thread (and what it spawns later) to `cpu`. Ignored if that fails (a
/// machine with fewer CPUs): the figures then say less, but the run still works.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Raises the soft descriptor limit to the hard one (idle-connection runs need ~10,000).
pub fn raise_nofile() {
    // SAFETY: `lim` is a valid rlimit for the calls to read and write.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The byte at `offset` of connection `conn`'s request stream; the echo must return exactly
/// this stream.
#[inline]
pub fn pattern(conn: usize, offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(conn as u64 * 31) % 251) as u8
}

/// A log-linear histogram of nanoseconds: 32 sub-buckets per power of two (≤ 3% error).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB: u32 = 32;

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; 64 * SUB as usize],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        let ns = ns.max(1);
        let exp = 63 - ns.leading_zeros();
        if exp < 5 {
            return ns as usize;
        }
        let sub = (ns >> (exp - 5)) as u32 & (SUB - 1);
        (exp * SUB + sub) as usize
    }

    fn value(index: usize) -> u64 {
        let (exp, sub) = (index as u32 / SUB, index as u32 % SUB);
        if exp < 5 {
            return index as u64;
        }
        ((SUB + sub) as u64) << (exp - 5)
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let i = Self::index(d.as_nanos() as u64).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::value(i) as f64 / 1000.0;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.quantile_us(q);
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_options_parse_as_values_and_flags() {
        let a = Args::from_words(words(&["--rounds", "3", "--quick"]), &["rounds", "quick"])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(a.get("rounds", 7usize), 3);
        assert!(a.flag("quick"));
        assert!(!a.flag("rounds-missing"));
    }

    #[test]
    fn a_mistyped_option_is_refused_not_ignored() {
        let e = Args::from_words(words(&["--round", "3"]), &["rounds"]).err();
        assert_eq!(e, Some(Some("unknown option --round".to_string())));
        let e = Args::from_words(words(&["3"]), &["rounds"]).err();
        assert_eq!(e, Some(Some("unexpected argument \"3\"".to_string())));
    }

    #[test]
    fn help_asks_for_the_usage() {
        for w in ["--help", "-h"] {
            assert_eq!(Args::from_words(words(&[w]), &[]).err(), Some(None));
        }
    }
}
