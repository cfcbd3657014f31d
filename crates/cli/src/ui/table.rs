//! Aligned tables the way the Docker CLI writes them (Go's `tabwriter` with a minimum cell
//! width of 10 and 3 spaces of padding): every column but the last is padded to its widest
//! cell plus 3, and to at least 10 characters; the last column is never padded.

/// A table: a header row and data rows of the same length.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

/// The narrowest a padded column gets (tabwriter's `minwidth`).
const MIN_WIDTH: usize = 10;
/// Spaces after the widest cell of a column (tabwriter's `padding`).
const PADDING: usize = 3;

impl Table {
    /// A table with this header.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Add a row (missing cells are empty, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (k, w) in widths.iter().enumerate() {
                let cell = row.get(k).map(String::as_str).unwrap_or("");
                if k + 1 == columns {
                    out.push_str(cell);
                } else {
                    let width = (w + PADDING).max(MIN_WIDTH);
                    out.push_str(cell);
                    let n = width.saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', n));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_pad_like_docker() {
        let mut t = Table::new(&["IMAGE", "CREATED", "SIZE", "COMMENT"]);
        t.row(vec![
            "0123456789ab".into(),
            "2 minutes ago".into(),
            "0B".into(),
            "".into(),
        ]);
        t.row(vec![
            "<missing>".into(),
            "2 minutes ago".into(),
            "2.17MB".into(),
            "buildkit.dockerfile.v0".into(),
        ]);
        assert_eq!(
            t.render(),
            "IMAGE          CREATED         SIZE      COMMENT\n\
             0123456789ab   2 minutes ago   0B        \n\
             <missing>      2 minutes ago   2.17MB    buildkit.dockerfile.v0\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["abcdefghijé…".into(), "x".into()]);
        let out = t.render();
        let first = out.lines().nth(1).unwrap();
        assert_eq!(first, "abcdefghijé…   x");
    }
}
