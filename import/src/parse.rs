//! Reading records out of the input bytes: TSV (`key<TAB>value`), CSV (two fields, RFC 4180
//! quoting) and JSON lines (`{"key": "...", "value": ...}`). Every record and every malformed
//! line is reported with its 1-based line number.
use std::borrow::Cow;

/// Largest key accepted (the stores' limit).
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// Largest value accepted (the stores' limit).
pub const MAX_VALUE_BYTES: usize = 32 << 20;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One record per line: the key, a tab, the value (the rest of the line, tabs included).
    Tsv,
    /// Two fields per record, comma separated, RFC 4180 quoting (values may span lines).
    Csv,
    /// One JSON object per line with a string `key` and a `value`: a string is stored as its
    /// text, any other JSON value as its compact JSON text.
    Jsonl,
}

impl Format {
    /// The format a file name suggests (`.tsv`, `.csv`, `.jsonl`/`.json`/`.ndjson`); `None` otherwise.
    pub fn from_extension(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "tsv" | "tab" => Some(Self::Tsv),
            "csv" => Some(Self::Csv),
            "jsonl" | "json" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// A line that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the input.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Calls `record(key, value)` for every record of `data` in order and `bad(BadLine)` for every
/// malformed one; `progress(bytes)` is told how far into `data` parsing has got, now and then.
pub fn parse(format: Format, data: &[u8], mut record: impl FnMut(&[u8], &[u8]), mut bad: impl FnMut(BadLine), mut progress: impl FnMut(u64)) {
    match format {
        Format::Tsv | Format::Jsonl => {
            let mut offset = 0usize;
            for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
                let line = index as u64 + 1;
                offset += raw.len() + 1;
                if index.is_multiple_of(65_536) {
                    progress(offset.min(data.len()) as u64);
                }
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                if raw.is_empty() {
                    continue;
                }
                let parsed = if format == Format::Tsv { split_tsv(raw) } else { split_json(raw) };
                match parsed.and_then(|(key, value)| validate(&key, &value).map(|()| (key, value))) {
                    Ok((key, value)) => record(&key, &value),
                    Err(reason) => bad(BadLine { line, reason }),
                }
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
            let mut rec = csv::ByteRecord::new();
            let mut count = 0u64;
            loop {
                let line = reader.position().line();
                match reader.read_byte_record(&mut rec) {
                    Ok(false) => break,
                    Ok(true) if rec.len() == 2 => match validate(&rec[0], &rec[1]) {
                        Ok(()) => record(&rec[0], &rec[1]),
                        Err(reason) => bad(BadLine { line, reason }),
                    },
                    Ok(true) if rec.len() == 1 && rec[0].is_empty() => {}
                    Ok(true) => bad(BadLine { line, reason: format!("expected 2 fields (key,value), found {}", rec.len()) }),
                    Err(e) => {
                        let line = e.position().map_or(line, |p| p.line());
                        bad(BadLine { line, reason: e.to_string() });
                        if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }) {
                            break;
                        }
                    }
                }
                count += 1;
                if count.is_multiple_of(65_536) {
                    progress(reader.position().byte());
                }
            }
        }
    }
    progress(data.len() as u64);
}

/// A record's key and value, borrowed from the input where no unescaping was needed.
type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

fn validate(key: &[u8], value: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key of {} bytes is over the {MAX_KEY_BYTES}-byte limit", key.len()));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit", value.len()));
    }
    Ok(())
}

fn split_tsv(raw: &[u8]) -> Result<Pair<'_>, String> {
    let tab = raw.iter().position(|&b| b == b'\t').ok_or("no tab between key and value")?;
    Ok((Cow::Borrowed(&raw[..tab]), Cow::Borrowed(&raw[tab + 1..])))
}

#[derive(serde::Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    value: serde_json::Value,
}

fn split_json(raw: &[u8]) -> Result<Pair<'_>, String> {
    let rec: JsonRecord<'_> = serde_json::from_slice(raw).map_err(|e| format!("not a {{\"key\": ..., \"value\": ...}} object: {e}"))?;
    let key = match rec.key {
        Cow::Borrowed(k) => Cow::Borrowed(k.as_bytes()),
        Cow::Owned(k) => Cow::Owned(k.into_bytes()),
    };
    let value = match rec.value {
        serde_json::Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    Ok((key, Cow::Owned(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, input: &str) -> (Vec<(String, String)>, Vec<BadLine>) {
        let (mut records, mut bad) = (Vec::new(), Vec::new());
        parse(
            format,
            input.as_bytes(),
            |k, v| records.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())),
            |b| bad.push(b),
            |_| {},
        );
        (records, bad)
    }

    #[test]
    fn tsv_lines_with_line_numbers_for_bad_ones() {
        let (records, bad) = run(Format::Tsv, "a\t1\r\nb\tx\ty\n\nno-tab\n\tempty-key\nc\t\n");
        assert_eq!(records, vec![("a".into(), "1".into()), ("b".into(), "x\ty".into()), ("c".into(), String::new())]);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![4, 5]);
        assert!(bad[0].reason.contains("no tab"), "{bad:?}");
    }

    #[test]
    fn csv_quoting_and_field_counts() {
        let (records, bad) = run(Format::Csv, "a,1\n\"b,c\",\"multi\nline\"\nonly-one\nd,\"say \"\"hi\"\"\"\n");
        assert_eq!(records, vec![("a".into(), "1".into()), ("b,c".into(), "multi\nline".into()), ("d".into(), "say \"hi\"".into())]);
        assert_eq!(bad, vec![BadLine { line: 4, reason: "expected 2 fields (key,value), found 1".into() }]);
    }

    #[test]
    fn json_lines_take_strings_and_any_value() {
        let input = "{\"key\":\"a\",\"value\":\"x\\ny\"}\n{\"key\":\"b\",\"value\":{\"n\":1}}\n{\"key\":3,\"value\":\"v\"}\nnot json\n";
        let (records, bad) = run(Format::Jsonl, input);
        assert_eq!(records, vec![("a".into(), "x\ny".into()), ("b".into(), "{\"n\":1}".into())]);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn oversize_keys_are_bad_lines() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let (records, bad) = run(Format::Tsv, &format!("{long}\tv\nok\tv\n"));
        assert_eq!(records.len(), 1);
        assert_eq!(bad[0].line, 1);
    }

    #[test]
    fn formats_from_extensions() {
        assert_eq!(Format::from_extension("x/data.CSV".as_ref()), Some(Format::Csv));
        assert_eq!(Format::from_extension("d.ndjson".as_ref()), Some(Format::Jsonl));
        assert_eq!(Format::from_extension("d.txt".as_ref()), None);
    }
}
