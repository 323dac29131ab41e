//! The closing table: one row per figure, beside its baseline and its target.

/// One line of the table. Every cell is already formatted.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub dispatcher: String,
    pub baseline: String,
    /// dispatcher / baseline.
    pub ratio: String,
    /// The target or yardstick, with whether it was met when there is a number to meet.
    pub target: String,
}

impl Row {
    pub fn new(measure: impl Into<String>, dispatcher: String, baseline: String) -> Self {
        Row {
            measure: measure.into(),
            dispatcher,
            baseline,
            ratio: String::new(),
            target: String::new(),
        }
    }

    /// Sets the ratio cell to `dispatcher / baseline`.
    pub fn ratio(mut self, dispatcher: f64, baseline: f64) -> Self {
        self.ratio = if baseline > 0.0 {
            format!("{:.2}x", dispatcher / baseline)
        } else {
            "-".into()
        };
        self
    }

    /// Sets the target cell; `met` adds whether the figure meets it.
    pub fn target(mut self, target: impl Into<String>, met: Option<bool>) -> Self {
        self.target = target.into();
        match met {
            Some(true) => self.target.push_str("  [met]"),
            Some(false) => self.target.push_str("  [MISSED]"),
            None => {}
        }
        self
    }
}

/// Rows gathered from every section, printed once at the end.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn print(&self) {
        let header = Row {
            measure: "measure".into(),
            dispatcher: "dispatcher".into(),
            baseline: "baseline (native)".into(),
            ratio: "ratio".into(),
            target: "target".into(),
        };
        let cells = |r: &Row| {
            [
                r.measure.clone(),
                r.dispatcher.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
            ]
        };
        let all: Vec<[String; 5]> = std::iter::once(&header)
            .chain(&self.rows)
            .map(cells)
            .collect();
        let mut widths = [0usize; 5];
        for row in &all {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (i, row) in all.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            println!("{}", line.join(" | ").trim_end());
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                println!("{}", rule.join("-|-"));
            }
        }
    }
}

/// This machine: cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// How busy the machine's CPUs are with other work, measured over `window` while the bench
/// waits: other work skews every figure, so the bench reports it.
pub fn cpu_busy(window: std::time::Duration) -> Option<f64> {
    let before = cpu_jiffies()?;
    std::thread::sleep(window);
    let after = cpu_jiffies()?;
    let total = after.0.checked_sub(before.0)?;
    let idle = after.1.checked_sub(before.1)?;
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// (all, idle + iowait) jiffies from the `cpu` line of `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = values.get(3)? + values.get(4)?;
    Some((values.iter().sum(), idle))
}
