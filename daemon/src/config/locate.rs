//! Turning byte offsets and key paths into the line and column a user's editor shows.

use toml::de::{DeTable, DeValue};

/// 1-based line and column (in characters) of a byte offset into `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Where a dotted key path such as `listener[1].listen` is written in `source`.
///
/// Falls back to the deepest part of the path that exists, so a problem with a key that was
/// left out (and took its default) still points at the table it belongs in. `None` when the
/// source does not parse or the path matches nothing.
pub fn locate_key(source: &str, key: &str) -> Option<(usize, usize)> {
    let root = DeTable::parse(source).ok()?;
    let mut span = None;
    let mut current: Option<&toml::Spanned<DeValue<'_>>> = None;
    for segment in path_segments(key) {
        let next = match (&segment, current) {
            (Segment::Key(k), None) => root.get_ref().get(*k),
            (Segment::Key(k), Some(value)) => value.get_ref().get(*k),
            (Segment::Index(i), Some(value)) => value.get_ref().get(*i),
            (Segment::Index(_), None) => None,
        };
        match next {
            Some(value) => {
                span = Some(value.span());
                current = Some(value);
            }
            None => break,
        }
    }
    span.map(|s| line_column(source, s.start))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_segments(key: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segments.push(Segment::Key(name));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(index) = rest[1..close].parse() {
                segments.push(Segment::Index(index));
            }
            rest = &rest[close + 1..];
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, src.find('=').map_or(0, |_| 10)), (2, 4));
    }

    #[test]
    fn finds_keys_inside_arrays_of_tables() {
        let src = "[metrics]\nlisten = \"x\"\n\n[[listener]]\nname = \"a\"\n\n[[listener]]\nname = \"b\"\nlisten = \"y\"\n";
        assert_eq!(locate_key(src, "metrics.listen"), Some((2, 10)));
        assert_eq!(locate_key(src, "listener[1].listen"), Some((9, 10)));
        // A key left out points at its table.
        assert_eq!(locate_key(src, "listener[0].listen").map(|p| p.0), Some(4));
        assert_eq!(locate_key(src, "nothing.here"), None);
    }
}
