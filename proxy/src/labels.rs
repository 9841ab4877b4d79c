//! Pod labels from a Kubernetes downward-API file (`LABELS_PATH`, written
//! by the kubelet from `metadata.labels`): one `key="value"` per line, the
//! value quoted with Go's escaping (`\"`, `\\`, `\n`, ...).

use std::collections::BTreeMap;

/// Why the labels file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// A line is not `key="value"`.
    #[error("line {line}: {text:?} is not key=\"value\"")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            other => out.push(other),
        }
    }
    Some(out)
}

/// Parses the downward-API labels format. Blank lines are skipped; an
/// unquoted value is taken as is.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, LabelsError> {
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let syntax = || LabelsError::Syntax {
            line: i + 1,
            text: line.to_owned(),
        };
        let (k, v) = line.split_once('=').ok_or_else(syntax)?;
        let k = k.trim();
        if k.is_empty() {
            return Err(syntax());
        }
        let v = v.trim();
        let value = if v.starts_with('"') {
            unquote(v).ok_or_else(syntax)?
        } else {
            v.to_owned()
        };
        labels.insert(k.to_owned(), value);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubelet_format_with_escapes() {
        let text = "app=\"reviews\"\nversion=\"v1\"\n\
                    security.istio.io/tlsMode=\"istio\"\nnote=\"a \\\"q\\\" b\"\n\n";
        let l = parse(text).unwrap();
        assert_eq!(l["app"], "reviews");
        assert_eq!(l["version"], "v1");
        assert_eq!(l["security.istio.io/tlsMode"], "istio");
        assert_eq!(l["note"], "a \"q\" b");
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn names_the_line_that_is_not_key_value() {
        let err = parse("app=\"x\"\nbroken\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2"), "{err}");
        assert!(parse("app=\"unterminated\n").is_err());
    }
}
