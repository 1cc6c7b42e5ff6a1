//! kubectl-style tables: upper-case headers, columns left-aligned and separated by three
//! spaces, no borders; plus the human durations kubectl prints in AGE columns.

/// A table under construction.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// Renders the table; with no rows, kubectl's "No resources found." line.
    pub fn render(&self, what: &str) -> String {
        if self.rows.is_empty() {
            return format!("No {what} found.\n");
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let last = r.len() - 1;
            for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                if i == last {
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.extend(std::iter::repeat_n(' ', w - c.chars().count() + 3));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// kubectl's human duration: `45s`, `3m20s`, `25m`, `5h12m`, `3d4h`, `120d`.
pub fn human_duration(ms: i64) -> String {
    if ms < 0 {
        return "0s".into();
    }
    let s = ms / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// Age of something created at `created_ms` (unix ms), or `<unknown>`.
pub fn age(created_ms: i64, now_ms: i64) -> String {
    if created_ms <= 0 {
        "<unknown>".into()
    } else {
        human_duration(now_ms - created_ms)
    }
}

/// Bytes as kubectl-like quantities: `32Mi`, `1.5Gi`, `512`.
pub fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if b >= size {
            let v = b as f64 / size as f64;
            return if (v - v.round()).abs() < 0.05 {
                format!("{:.0}{suffix}", v)
            } else {
                format!("{v:.1}{suffix}")
            };
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_like_kubectl() {
        let mut t = Table::new(&["NAME", "READY", "STATUS"]);
        t.row(vec!["my-app-x7k2q".into(), "1/1".into(), "Running".into()]);
        t.row(vec!["a".into(), "0/1".into(), "Pending".into()]);
        let text = t.render("pods");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME           READY   STATUS");
        assert_eq!(lines[1], "my-app-x7k2q   1/1     Running");
        assert_eq!(lines[2], "a              0/1     Pending");
    }

    #[test]
    fn empty_tables_say_so() {
        assert_eq!(Table::new(&["NAME"]).render("pods"), "No pods found.\n");
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(200_000), "3m20s");
        assert_eq!(human_duration(25 * 60_000), "25m");
        assert_eq!(human_duration(5 * 3_600_000 + 12 * 60_000), "5h12m");
        assert_eq!(human_duration(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
    }

    #[test]
    fn bytes_use_binary_suffixes() {
        assert_eq!(bytes(32 << 20), "32Mi");
        assert_eq!(bytes(3 << 29), "1.5Gi");
        assert_eq!(bytes(512), "512");
    }
}
