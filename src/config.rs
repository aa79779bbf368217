//! Run configurations: a TOML file, then `key.path=value` overrides from the command line,
//! deserialised into a typed config whose unknown keys are refused by name.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Reads `path` (when given), applies `overrides`, and deserialises the result.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, overrides: &[String]) -> Result<T> {
    let mut root = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            text.parse::<Table>().with_context(|| format!("parsing {}", p.display()))?
        }
        None => Table::new(),
    };
    for o in overrides {
        apply_override(&mut root, o)?;
    }
    // Going through the text form gives errors that quote the offending key.
    let text = toml::to_string(&root).context("re-serialising the config")?;
    let origin = path.map_or("the command line".to_string(), |p| p.display().to_string());
    toml::from_str(&text).map_err(|e| {
        let at = e.span().and_then(|span| key_at(&text, span.start)).map_or(String::new(), |k| format!("{k}: "));
        anyhow::anyhow!("invalid config ({origin} with overrides): {at}{}", e.message())
    })
}

/// The dotted key (`section.key`) whose line holds byte `offset` of a serialised TOML table.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?.trim();
    let header = |l: &str| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(|l| l.trim_matches(['[', ']']).trim().to_string());
    if let Some(h) = header(line) {
        return Some(h);
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    let section = text[..start].lines().rev().find_map(|l| header(l.trim()));
    Some(section.map_or(key.to_string(), |s| format!("{s}.{key}")))
}

/// `a.b.c=value`: the value is read as TOML (numbers, booleans, arrays, quoted strings) and
/// otherwise taken as a bare string.
fn apply_override(root: &mut Table, o: &str) -> Result<()> {
    let Some((key, raw)) = o.split_once('=') else { bail!("override {o:?} is not of the form key.path=value") };
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        bail!("override {o:?} has an empty key");
    }
    let value = match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").expect("parsed"),
        Err(_) => Value::String(raw.to_string()),
    };
    let mut table = root;
    for part in &path[..path.len() - 1] {
        let entry = table.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        table = entry.as_table_mut().with_context(|| format!("override {o:?}: {part} is not a section"))?;
    }
    table.insert(path[path.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        lr: f64,
        name: String,
        steps: Vec<u32>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        trainer: Inner,
        seed: u64,
    }

    #[test]
    fn overrides_are_typed_and_nested() {
        let c: Outer = load(None, &["trainer.lr=0.5".into(), "trainer.name=abc".into(), "trainer.steps=[1, 2]".into(), "seed=7".into()]).unwrap();
        assert_eq!((c.trainer.lr, c.trainer.name.as_str(), c.trainer.steps.as_slice(), c.seed), (0.5, "abc", &[1, 2][..], 7));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load::<Outer>(None, &["trainer.lrr=0.5".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("lrr"), "{err:#}");
        let err = load::<Outer>(None, &["trainer.lr=\"fast\"".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("trainer.lr: "), "{err:#}");
        let err = load::<Outer>(None, &["seed=-3".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("seed: "), "{err:#}");
        let err = load::<Outer>(None, &["nonsense".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("key.path=value"), "{err:#}");
    }
}
