//! JSON output: one compact object per line for listings (what `docker ... --format json`
//! prints), or an indented document for `inspect` (four spaces, as Docker indents).

use std::io::Write;

use serde::Serialize;

/// Write each item as one compact JSON line.
pub fn write_lines<T: Serialize>(out: &mut impl Write, items: &[T]) -> anyhow::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *out, item)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Write a value indented by four spaces, followed by a newline.
pub fn write_pretty<T: Serialize>(out: &mut impl Write, value: &T) -> anyhow::Result<()> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, formatter);
    value.serialize(&mut ser)?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_pretty() {
        let mut out = Vec::new();
        write_lines(&mut out, &[serde_json::json!({"b": 1, "a": "x"})]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":\"x\",\"b\":1}\n");
        let mut out = Vec::new();
        write_pretty(&mut out, &serde_json::json!([{"Id": "x"}])).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\n    {\n        \"Id\": \"x\"\n    }\n]\n"
        );
    }
}
