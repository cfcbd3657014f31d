//! "Did you mean ...?" for misspelt keywords, flags and names.

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a
/// plausible typo: an edit distance (with transpositions) of at most a third of the
/// word's length, and at least 1.
pub(crate) fn suggest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    let w: Vec<char> = word.to_lowercase().chars().collect();
    if w.is_empty() || w.len() > 64 {
        return None;
    }
    let limit = (w.len() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let c = c.as_ref();
        let cl: Vec<char> = c.to_lowercase().chars().collect();
        if cl == w {
            continue;
        }
        let d = distance(&w, &cl);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let kw = ["FROM", "RUN", "COPY", "WORKDIR", "EXPOSE"];
        assert_eq!(suggest("FORM", &kw).as_deref(), Some("FROM"));
        assert_eq!(suggest("RUNN", &kw).as_deref(), Some("RUN"));
        assert_eq!(suggest("cpy", &kw).as_deref(), Some("COPY"));
        assert_eq!(suggest("WROKDIR", &kw).as_deref(), Some("WORKDIR"));
        assert_eq!(suggest("BANANA", &kw), None);
        assert_eq!(suggest("", &kw), None);
    }
}
