//! Processes: signals, waiting for them, and what /proc says of them (process
//! trees, CPU ticks, peak RSS).

use super::*;

/// Sends a signal by running kill(1): std has no signal API.
pub(super) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for the child to exit; false if it is still running at the end.
pub(super) fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => return false,
        }
    }
}

/// A process identity that survives pid reuse: (pid, start time in clock ticks).
pub(super) type ProcId = (u32, u64);

/// What /proc/PID/stat says about a process.
pub(super) struct Stat {
    /// The command name (at most 15 bytes), e.g. "mpiweb", "nginx", "hydra_pmi_proxy".
    pub(super) comm: String,
    ppid: u32,
    /// Start time in clock ticks since boot: with the pid, names the process for good.
    pub(super) start: u64,
    /// Exited and waiting to be reaped: nothing left to stop.
    zombie: bool,
    /// CPU time used so far, user plus system, in clock ticks (all threads).
    pub(super) cpu_ticks: u64,
}

pub(super) fn proc_stat(pid: u32) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let close = stat.rfind(')')?;
    let comm = stat[stat.find('(')? + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        cpu_ticks: ticks(11)? + ticks(12)?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        zombie: matches!(*fields.first()?, "Z" | "X"),
    })
}

/// Every process that has not exited, by pid.
fn process_table() -> HashMap<u32, Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, stat)| !stat.zombie)
        .collect()
}

pub(super) fn children_of(pid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == pid)
        .map(|(p, _)| p)
        .collect()
}

/// All processes below `root`, each with its start time.
pub(super) fn descendants(root: u32) -> Vec<ProcId> {
    let table = process_table();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, stat) in &table {
            if stat.ppid == parent {
                found.push((pid, stat.start));
                frontier.push(pid);
            }
        }
    }
    found
}

/// Kills, by pid, processes of a stopped server that are still alive (and are still the same processes).
pub(super) fn kill_leftovers(tree: &[ProcId]) {
    let alive = |&(pid, start): &ProcId| {
        proc_stat(pid).is_some_and(|stat| stat.start == start && !stat.zombie)
    };
    // Their parent's SIGTERM handling may still be finishing: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tree.iter().any(alive) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    for proc_id in tree.iter().filter(|p| alive(p)) {
        eprintln!("bench: killing leftover process {}", proc_id.0);
        signal(proc_id.0, "KILL");
    }
}

/// VmHWM (peak resident set) of a process in KiB.
pub(super) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU ticks used so far by `root` and every process below it (exited
/// threads included: a process's times count them).
pub(super) fn tree_ticks(root: u32) -> u64 {
    let mut tree = descendants(root);
    tree.push((root, 0));
    tree.iter()
        .filter_map(|&(pid, _)| proc_stat(pid))
        .map(|s| s.cpu_ticks)
        .sum()
}

/// Clock ticks per second of /proc/PID/stat's times (`getconf CLK_TCK`; 100 on Linux).
pub(super) fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}
