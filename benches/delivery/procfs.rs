//! Clock ticks, process titles and peak RSS, read from /proc.

pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub own: u64,
    /// cutime + cstime: reaped children's (and their reaped children's) time.
    pub reaped: u64,
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: num(4)? as i32,
        own: num(14)? + num(15)?,
        reaped: num(16)? + num(17)?,
    })
}

pub fn all_procs() -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `root` and its live descendants.
pub fn descendants(procs: &[ProcStat], root: i32) -> Vec<&ProcStat> {
    let mut out = Vec::new();
    if root <= 0 {
        return out;
    }
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for p in procs {
            if p.pid == pid {
                out.push(p);
            }
            if p.ppid == pid {
                stack.push(p.pid);
            }
        }
    }
    out
}

/// Clock ticks of `root` and its descendants, live and reaped.
pub fn tree_ticks(procs: &[ProcStat], root: i32) -> u64 {
    descendants(procs, root)
        .iter()
        .map(|p| p.own + p.reaped)
        .sum()
}

/// "postgres: walwriter" and the like.
pub fn proc_title(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("pid {pid}"))
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Non-idle time of all CPUs, from the first line of /proc/stat.
pub fn machine_busy_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / clk_tck()
}

pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}
