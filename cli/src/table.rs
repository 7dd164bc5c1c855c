//! Column alignment as Go's `text/tabwriter` does it, which is what makes kubectl's
//! output look the way it does: cells end with a tab, the text after a line's last tab
//! is not aligned, and a column's width is decided per block of consecutive lines that
//! have that column, so describe's nested sections align independently.
//!
//! Not the `tabwriter` crate: it runs the same per-block algorithm (with `minwidth`
//! meaning Go's `minwidth - padding`), but it measures cells in display columns
//! (`unicode-width`) where Go counts runes, so a cell with a wide or combining
//! character (`日本`, `e\u{301}`) is padded differently from kubectl; and it has no
//! remembered widths for `get -w` (`StickyColumns`).

/// Tabwriter settings: a column is as wide as its widest cell plus `padding`, and at
/// least `min_width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TabWriter {
    pub min_width: usize,
    pub padding: usize,
}

impl TabWriter {
    /// `kubectl get`'s tables (`printers.GetNewTabWriter`).
    pub const TABLE: TabWriter = TabWriter {
        min_width: 6,
        padding: 3,
    };
    /// `kubectl describe`'s sections.
    pub const DESCRIBE: TabWriter = TabWriter {
        min_width: 0,
        padding: 2,
    };

    /// Aligns `text` (lines of tab-terminated cells).
    pub fn format(&self, text: &str) -> String {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
        let mut out = String::with_capacity(text.len() * 2);
        let mut widths = Vec::new();
        self.format_block(&lines, &mut widths, 0, lines.len(), &mut out);
        out
    }

    /// Go's `Writer.format`: finds the blocks of lines that have a cell in the next
    /// column, sizes that column per block, and recurses.
    fn format_block(
        &self,
        lines: &[Vec<&str>],
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
        out: &mut String,
    ) {
        let column = widths.len();
        let has_cell = |line: &Vec<&str>| column + 1 < line.len();
        let mut this = line0;
        while this < line1 {
            if !has_cell(&lines[this]) {
                this += 1;
                continue;
            }
            write_lines(&lines[line0..this], widths, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 && has_cell(&lines[this]) {
                width = width.max(display_width(lines[this][column]) + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format_block(lines, widths, line0, this, out);
            widths.pop();
            line0 = this;
        }
        write_lines(&lines[line0..line1], widths, out);
    }
}

fn write_lines(lines: &[Vec<&str>], widths: &[usize], out: &mut String) {
    for line in lines {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(&w) = widths.get(j) {
                let pad = w.saturating_sub(display_width(cell));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
}

fn display_width(s: &str) -> usize {
    s.chars().count()
}

/// Rows of cells aligned like `kubectl get` (padding 3).
pub fn render_rows<S: AsRef<str>>(rows: &[Vec<S>]) -> String {
    let mut text = String::new();
    for row in rows {
        let cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    TabWriter::TABLE.format(&text)
}

/// Column widths that only grow, for `get -w`: the first table decides them and later
/// lines keep to them unless a cell is wider, so the stream stays readable.
#[derive(Debug, Default)]
pub struct StickyColumns {
    widths: Vec<usize>,
}

impl StickyColumns {
    /// Widens the columns to fit `rows` (every cell but each row's last).
    pub fn fit<S: AsRef<str>>(&mut self, rows: &[Vec<S>]) {
        for row in rows {
            for (j, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                let w = (display_width(cell.as_ref()) + TabWriter::TABLE.padding)
                    .max(TabWriter::TABLE.min_width);
                if j >= self.widths.len() {
                    self.widths.resize(j + 1, 0);
                }
                self.widths[j] = self.widths[j].max(w);
            }
        }
    }

    /// One row, padded to the current widths (widened first if needed).
    pub fn line<S: AsRef<str>>(&mut self, row: &[S]) -> String {
        let cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        self.fit(std::slice::from_ref(&cells));
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (j, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if j < last {
                let pad = self.widths[j].saturating_sub(display_width(cell));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_padded_by_three_and_the_last_is_not_padded() {
        let rows = vec![
            vec!["NAME", "READY", "AGE"],
            vec!["web", "3/3", "5s"],
            vec!["a-longer-name", "0/1", "10m"],
        ];
        assert_eq!(
            render_rows(&rows),
            "NAME            READY   AGE\n\
             web             3/3     5s\n\
             a-longer-name   0/1     10m\n"
        );
    }

    #[test]
    fn narrow_columns_are_at_least_six_wide_like_kubectl() {
        let rows = vec![vec!["A", "B"], vec!["1", "2"]];
        assert_eq!(render_rows(&rows), "A     B\n1     2\n");
    }

    #[test]
    fn describe_blocks_align_separately_when_a_line_without_tabs_separates_them() {
        let text = "Name:\tweb\nNamespace:\tdefault\nPod Template:\n  Labels:\tapp=web\n";
        assert_eq!(
            TabWriter::DESCRIBE.format(text),
            "Name:       web\nNamespace:  default\nPod Template:\n  Labels:  app=web\n"
        );
    }

    #[test]
    fn cells_are_measured_in_characters_not_bytes() {
        let rows = vec![vec!["é", "x"], vec!["ab", "y"]];
        assert_eq!(render_rows(&rows), "é     x\nab    y\n");
    }

    #[test]
    fn cells_are_measured_in_runes_as_go_does_even_wide_or_combining_ones() {
        let rows = vec![vec!["日本", "x"], vec!["e\u{301}", "y"], vec!["ab", "z"]];
        assert_eq!(render_rows(&rows), "日本    x\ne\u{301}    y\nab    z\n");
    }

    #[test]
    fn sticky_columns_keep_the_first_tables_widths_and_grow_when_needed() {
        let mut cols = StickyColumns::default();
        cols.fit(&[vec!["NAME", "READY", "AGE"], vec!["web", "1/1", "5s"]]);
        assert_eq!(cols.line(&["api", "0/1", "1s"]), "api    0/1     1s\n");
        assert_eq!(
            cols.line(&["much-longer", "0/1", "1s"]),
            "much-longer   0/1     1s\n"
        );
        assert_eq!(cols.line(&["x", "1/1", "2s"]), "x             1/1     2s\n");
    }
}
