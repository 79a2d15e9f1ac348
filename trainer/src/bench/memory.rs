//! Resident memory of this process, read from `/proc/self/status` (Linux).
//!
//! `VmHWM` is the high-water mark of the resident set since the process started; it cannot be
//! reset, so the benchmark reads it after each phase and orders the phases so that the training
//! step's peak is not hidden by an earlier, larger one (see [`super::run_bench`]).

/// `VmRSS` and `VmHWM` in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ProcessMemory {
    /// Resident set now.
    pub rss: u64,
    /// Peak resident set since the process started.
    pub peak: u64,
}

/// The current `VmRSS` / `VmHWM`, or `None` where `/proc/self/status` is unavailable.
pub fn process_memory() -> Option<ProcessMemory> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&text)
}

/// Parse the `VmRSS:` and `VmHWM:` lines (values in kB) of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<ProcessMemory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(ProcessMemory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kilobytes() {
        let text = "Name:\tglm-tune\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(text),
            Some(ProcessMemory {
                rss: 1024 * 1024,
                peak: 2048 * 1024
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let m = process_memory().unwrap();
            assert!(m.peak >= m.rss && m.rss > 0);
        }
    }
}
