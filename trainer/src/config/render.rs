//! Text renderings of the key table and of an experiment: TOML values, the saved
//! `experiment.toml` ([`Experiment::to_toml`]), the `--help` key reference and the README's
//! markdown reference table. All of them read [`KEYS`], the single source of the key docs.

use std::fmt::Write as _;

use super::schema::{Experiment, KEYS};

/// A TOML value as it is written in an experiment file (`5e-5`, `"content"`, `true`).
pub fn render_value(value: &toml::Value) -> String {
    match value {
        // Debug prints the shortest text that parses back to the same f64 and switches to
        // exponent notation for small/large magnitudes (5e-5, 1e-8); both are valid TOML floats.
        toml::Value::Float(x) if x.is_nan() => "nan".to_owned(),
        toml::Value::Float(x) if x.is_infinite() => {
            if *x > 0.0 { "inf" } else { "-inf" }.to_owned()
        }
        toml::Value::Float(x) => format!("{x:?}"),
        other => other.to_string(),
    }
}

impl Experiment {
    /// The experiment as a TOML file: every key with a comment line (its first doc sentence,
    /// the mirrored flag and the default); unset optional keys are written commented out.
    /// Loading the result gives back an identical experiment (saved as
    /// `output_dir/experiment.toml`).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# glm-tune experiment: one run of ChatGLM-6B P-Tuning v2 / fine-tuning.\n\
             # Keys are the flags of THUDM's ptuning/main.py; `glm-tune config --help` documents each.\n",
        );
        for (key, value) in KEYS.iter().zip(self.values()) {
            let _ = writeln!(
                out,
                "\n# {} [{}; default {}]",
                key.summary(),
                key.mirrors_text(),
                key.default_text()
            );
            match value {
                Some(v) => {
                    let _ = writeln!(out, "{} = {}", key.name, render_value(&v));
                }
                None => {
                    let _ = writeln!(out, "# {} is unset", key.name);
                }
            }
        }
        out
    }
}

/// Wraps `text` to lines of at most `width` characters, each prefixed by `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty()
            && indent.len() + line.chars().count() + 1 + word.chars().count() > width
        {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

/// The key reference shown by `glm-tune <subcommand> --help`.
pub fn key_reference() -> String {
    let mut out = String::from(
        "Experiment keys (one TOML file = one run). Precedence: default < file < environment \
         variable GLM_TUNE_<KEY> < --set key=value (later --set wins). Relative paths are \
         relative to the current directory.\n",
    );
    let mut out = wrap(&std::mem::take(&mut out), "", 100);
    for key in KEYS {
        let _ = writeln!(
            out,
            "\n  {} = <{}>{}\n      default: {}; {}",
            key.name,
            key.type_name,
            if key.optional { " (optional)" } else { "" },
            key.default_text(),
            key.mirrors
                .map_or("glm-tune extension".to_owned(), |f| format!("mirrors {f}")),
        );
        out.push_str(&wrap(&key.doc_paragraph(), "      ", 100));
    }
    out
}

/// The README's config reference: a markdown table with key, type, default, original flag and
/// meaning of every key.
pub fn reference_markdown() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out =
        String::from("| key | type | default | original flag | meaning |\n|---|---|---|---|---|\n");
    for key in KEYS {
        let _ = writeln!(
            out,
            "| `{}` | {}{} | {} | {} | {} |",
            key.name,
            cell(key.type_name),
            if key.optional { " (optional)" } else { "" },
            match key.default_value() {
                // A TOML value is shown as code; "required", "unset", "= seed" as prose.
                Some(_) => format!("`{}`", cell(&key.default_text())),
                None => cell(&key.default_text()),
            },
            key.mirrors
                .map_or("glm-tune extension".to_owned(), |f| format!("`{f}`")),
            cell(&key.doc_paragraph()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_as_toml() {
        for x in [5e-5, 1e-8, 0.02, 3.0, 0.999, 1e20, 0.0, -1.5] {
            let text = render_value(&toml::Value::Float(x));
            let parsed: toml::Value = text.parse().unwrap();
            assert_eq!(parsed, toml::Value::Float(x), "{text}");
        }
        assert_eq!(render_value(&toml::Value::Float(5e-5)), "5e-5");
        assert_eq!(render_value(&toml::Value::Float(2e-2)), "0.02");
        assert_eq!(
            render_value(&toml::Value::String("a\"b".into()))
                .parse::<toml::Value>()
                .unwrap(),
            toml::Value::String("a\"b".into())
        );
    }

    #[test]
    fn help_reference_names_every_key() {
        let text = key_reference();
        for key in KEYS {
            assert!(
                text.contains(&format!("\n  {} = <", key.name)),
                "{}",
                key.name
            );
        }
        assert!(
            text.lines()
                .all(|l| l.chars().count() <= 100 || !l.contains(' ')),
            "{text}"
        );
    }

    /// The README's config reference is generated from KEYS; run with
    /// `GLM_TUNE_BLESS_README=1` to rewrite it after changing a key.
    #[test]
    fn readme_reference_lists_every_key() {
        const START: &str =
            "<!-- config-reference:start (generated from trainer/src/config/schema.rs) -->\n";
        const END: &str = "<!-- config-reference:end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let start = readme
            .find(START)
            .expect("README.md lacks the config-reference start marker")
            + START.len();
        let end = readme[start..]
            .find(END)
            .expect("README.md lacks the config-reference end marker")
            + start;
        let expected = reference_markdown();
        if readme[start..end] != expected && std::env::var_os("GLM_TUNE_BLESS_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], expected, &readme[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        for key in KEYS {
            assert!(
                readme[start..end].contains(&format!("| `{}` |", key.name)),
                "README lacks key {}",
                key.name
            );
        }
        assert_eq!(
            readme[start..end],
            expected,
            "README config reference is stale; rerun with GLM_TUNE_BLESS_README=1"
        );
    }
}
