//! `strata images`: list tags with their image ID, age and size.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use strata_store::{human_size, ImageSummary};

use crate::global::GlobalArgs;

/// Output formats of `strata images`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line (Docker's `--format json`).
    Json,
}

/// Options of `strata images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only show this repository (`busybox`, `me/app`).
    repository: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let mut images = store.images()?;
    if let Some(repo) = &args.repository {
        let want = strata_store::Reference::parse(repo)?.name();
        images.retain(|i| i.reference.as_ref().is_some_and(|r| r.name() == want));
    }
    // Newest first, like Docker; ties by name.
    images.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.reference.cmp(&b.reference))
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for i in &images {
            writeln!(out, "{}", i.id.short())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => {
            for i in &images {
                writeln!(out, "{}", json_line(i, now))?;
            }
        }
        Format::Table => {
            let rows: Vec<[String; 5]> = images
                .iter()
                .map(|i| {
                    [
                        repository(i),
                        tag(i),
                        i.id.short(),
                        created_ago(i.created.as_deref(), now),
                        human_size(i.size),
                    ]
                })
                .collect();
            let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
            let mut widths = header.map(str::len);
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: [&str; 5]| {
                let mut s = String::new();
                for (k, (c, w)) in cells.iter().zip(widths).enumerate() {
                    if k == 4 {
                        s.push_str(c);
                    } else {
                        s.push_str(&format!("{c:<w$}   "));
                    }
                }
                s
            };
            writeln!(out, "{}", line(header))?;
            for r in &rows {
                writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn repository(i: &ImageSummary) -> String {
    i.reference
        .as_ref()
        .map_or_else(|| "<none>".to_string(), |r| r.familiar_name())
}

fn tag(i: &ImageSummary) -> String {
    i.reference
        .as_ref()
        .and_then(|r| r.tag())
        .unwrap_or("<none>")
        .to_string()
}

fn json_line(i: &ImageSummary, now: i64) -> String {
    serde_json::json!({
        "Repository": repository(i),
        "Tag": tag(i),
        "Digest": i.manifest.digest.to_string(),
        "ID": i.id.short(),
        "CreatedAt": i.created.clone().unwrap_or_default(),
        "CreatedSince": created_ago(i.created.as_deref(), now),
        "Size": human_size(i.size),
        "VirtualSize": human_size(i.size),
    })
    .to_string()
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2024-01-02T03:04:05.678Z`,
/// offsets allowed).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r.get(1..3)?.parse::<i64>().ok()? * 3600
                + r.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Docker's "2 hours ago" style.
fn created_ago(created: Option<&str>, now: i64) -> String {
    let Some(t) = created.and_then(parse_rfc3339) else {
        return "N/A".to_string();
    };
    let secs = (now - t).max(0);
    let (n, unit) = match secs {
        s if s < 1 => return "Less than a second ago".to_string(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 48 * 3600 => (s / 3600, "hour"),
        s if s < 14 * 86_400 => (s / 86_400, "day"),
        s if s < 60 * 86_400 => (s / (7 * 86_400), "week"),
        s if s < 2 * 365 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    if n == 1 {
        let article = if unit == "hour" { "An" } else { "A" };
        format!("{article} {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_ages() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-01-01T00:00:00.123456789Z"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("junk"), None);
        assert_eq!(
            created_ago(Some("1970-01-01T00:00:00Z"), 7200),
            "2 hours ago"
        );
        assert_eq!(
            created_ago(Some("1970-01-01T00:00:00Z"), 3600),
            "An hour ago"
        );
        assert_eq!(created_ago(None, 5), "N/A");
    }
}
