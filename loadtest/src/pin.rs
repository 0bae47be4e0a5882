//! CPU pinning for the saturated workloads: `--server-cpus` runs a spawned server under
//! `taskset -c LIST` (nginx's workers and Sluice's runtimes inherit it), and `--client-cpus`
//! pins the harness itself with `sched_setaffinity` before it starts any thread, so that its
//! client threads and publisher inherit the mask. With the two lists disjoint the server has its
//! cores to itself and its CPU per delivery does not include the harness's.
//!
//! Knows nothing of the run.

use std::fmt;

use rustix::thread::{sched_setaffinity, CpuSet};

/// A validated CPU list in `taskset -c` syntax: `1`, `0,2`, `0-3`, `0-1,4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList {
    text: String,
    cpus: Vec<usize>,
}

impl CpuList {
    /// Parses `LIST`; every CPU must be below the kernel's mask size.
    pub fn parse(text: &str) -> Result<CpuList, String> {
        let invalid = || format!("'{text}': expected CPU numbers and ranges, e.g. 1 or 0,2-3");
        let mut cpus = Vec::new();
        for part in text.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let first: usize = first.trim().parse().map_err(|_| invalid())?;
            let last: usize = last.trim().parse().map_err(|_| invalid())?;
            if first > last || last >= CpuSet::MAX_CPU {
                return Err(invalid());
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList {
            text: text.to_owned(),
            cpus,
        })
    }

    /// The CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Pins the calling thread, and so every thread it starts afterwards, to these CPUs.
    pub fn pin_current_thread(&self) -> std::io::Result<()> {
        let mut set = CpuSet::new();
        for &cpu in &self.cpus {
            set.set(cpu);
        }
        sched_setaffinity(None, &set).map_err(std::io::Error::from)
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        assert_eq!(CpuList::parse("1").expect("valid").cpus(), [1]);
        assert_eq!(CpuList::parse("0,2-3").expect("valid").cpus(), [0, 2, 3]);
        assert_eq!(CpuList::parse("3,1,1-2").expect("valid").cpus(), [1, 2, 3]);
        assert_eq!(CpuList::parse("0-1").expect("valid").to_string(), "0-1");
        for bad in ["", "a", "1-", "2-1", "1,,2", "-1", "99999"] {
            assert!(CpuList::parse(bad).is_err(), "{bad}");
        }
    }
}
