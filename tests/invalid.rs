//! Malformed workflows: each fails with one line naming file:line:column and the field, and
//! leaves the state database untouched.

use leo_e2e::*;
use sha2_free::digest_files;

/// (case, file content, expected line, expected field, words the message must contain)
fn cases() -> Vec<(&'static str, Vec<u8>, usize, &'static str, &'static str)> {
    let h = "[workflow]\nname = \"bad\"\n\n";
    let ok = "plugin = \"shell\"\nparams = { run = \"true\", outputs = [\"out\"] }\n";
    let s = |body: String| body.into_bytes();
    vec![
        (
            "literal-credential",
            s(format!("{h}[stages.a]\n{ok}env = {{ HF_TOKEN = \"hf_abcdef123456\" }}\n")),
            7,
            "stages.a.env.HF_TOKEN",
            "looks like a credential",
        ),
        (
            "secret-in-params",
            s(format!(
                "{h}[stages.a]\nplugin = \"shell\"\nparams = {{ run = \"echo ${{secret.X}}\", outputs = [\"out\"] }}\n"
            )),
            6,
            "stages.a.params.run",
            "only allowed in `env`",
        ),
        (
            "syntax-error",
            s(format!("{h}[stages.a]\nplugin = \"shell\n")),
            5,
            "stages.a.plugin",
            "string",
        ),
        (
            "cycle",
            s(format!(
                "{h}[stages.a]\n{ok}needs = [\"b\"]\n\n[stages.b]\n{ok}needs = [\"a\"]\n"
            )),
            7,
            "stages.a.needs",
            "dependency cycle: a -> b -> a",
        ),
        (
            "self-dependency",
            s(format!("{h}[stages.a]\n{ok}needs = [\"a\"]\n")),
            7,
            "stages.a.needs",
            "itself",
        ),
        (
            "unknown-plugin",
            s(format!("{h}[stages.a]\nplugin = \"tokenise\"\n")),
            5,
            "stages.a.plugin",
            "unknown plugin `tokenise`",
        ),
        (
            "missing-dependency",
            s(format!("{h}[stages.a]\n{ok}needs = [\"prep\"]\n")),
            7,
            "stages.a.needs",
            "stage `prep` does not exist",
        ),
        (
            "duplicate-stage",
            s(format!("{h}[stages.a]\n{ok}\n[stages.a]\n{ok}")),
            8,
            "stages.a",
            "duplicate",
        ),
        (
            "unknown-key",
            s(format!("{h}[stages.a]\n{ok}retry = 3\n")),
            7,
            "stages.a.retry",
            "unknown field `retry`",
        ),
        (
            "wrong-param-type",
            s(format!(
                "{h}[stages.a]\nplugin = \"shell\"\nparams = {{ run = 42 }}\n"
            )),
            6,
            "stages.a.params.run",
            "must be a string, found an integer",
        ),
        (
            "bad-resource",
            s(format!(
                "{h}[stages.a]\n{ok}resources = {{ cpus = 2, memory = \"lots\" }}\n"
            )),
            7,
            "stages.a.resources.memory",
            "not a memory size",
        ),
        (
            "bad-resource-type",
            s(format!(
                "{h}[stages.a]\n{ok}resources = {{ cpus = \"two\" }}\n"
            )),
            7,
            "stages.a.resources.cpus",
            "invalid type",
        ),
        (
            "absurd-cpus",
            s(format!(
                "{h}[stages.a]\n{ok}resources = {{ cpus = 100000 }}\n"
            )),
            7,
            "stages.a.resources.cpus",
            "more than any machine",
        ),
        (
            "missing-output",
            s(format!(
                "{h}[stages.a]\n{ok}\n[stages.b]\n{ok}inputs = {{ x = \"a.tokens\" }}\n"
            )),
            11,
            "stages.b.inputs.x",
            "stage `a` has no output `tokens` (its outputs: out)",
        ),
        ("empty-file", s(String::new()), 1, "workflow", "empty"),
        (
            "invalid-utf8",
            [h.as_bytes(), b"[stages.a]\nplugin = \"sh\xffell\"\n"].concat(),
            5,
            "file",
            "invalid UTF-8",
        ),
        (
            "invalid-uri",
            s(format!(
                "{h}[stages.a]\n{ok}inputs = {{ raw = \"https://[oops/x\" }}\n"
            )),
            7,
            "stages.a.inputs.raw",
            "not a valid URI",
        ),
        (
            "unsupported-uri",
            s(format!(
                "{h}[stages.a]\n{ok}inputs = {{ raw = \"ftp://host/x\" }}\n"
            )),
            7,
            "stages.a.inputs.raw",
            "unsupported URI scheme `ftp`",
        ),
        (
            "negative-retries",
            s(format!("{h}[stages.a]\n{ok}retries = -1\n")),
            7,
            "stages.a.retries",
            "invalid value",
        ),
        (
            "absurd-timeout",
            s(format!("{h}[stages.a]\n{ok}timeout = \"400days\"\n")),
            7,
            "stages.a.timeout",
            "out of range",
        ),
        (
            "bad-timeout",
            s(format!("{h}[stages.a]\n{ok}timeout = \"soon\"\n")),
            7,
            "stages.a.timeout",
            "not a duration",
        ),
        (
            "undefined-variable",
            s(format!(
                "{h}[stages.a]\nplugin = \"shell\"\nparams = {{ run = \"seq ${{vars.n}}\" }}\n"
            )),
            6,
            "stages.a.params.run",
            "variable `n` is not defined",
        ),
        (
            "no-workflow-table",
            s(format!("[stages.a]\n{ok}")),
            1,
            "workflow",
            "missing field `workflow`",
        ),
        (
            "no-plugin",
            s(format!("{h}[stages.a]\nparams = {{ run = \"true\" }}\n")),
            4,
            "stages.a.plugin",
            "missing field `plugin`",
        ),
        ("no-stages", s(h.to_string()), 1, "stages", "no stages"),
        (
            "missing-exec-plugin",
            s(format!("{h}[stages.a]\nplugin = \"exec:./nope.sh\"\n")),
            5,
            "stages.a.plugin",
            "not found",
        ),
        (
            "bad-stage-name",
            s(format!("{h}[stages.\"a.b\"]\n{ok}")),
            4,
            "stages.a.b",
            "may only use",
        ),
    ]
}

mod sha2_free {
    use std::path::Path;

    /// Contents of the state database files, to compare before and after.
    pub fn digest_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    out.push((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    }
}

#[test]
fn malformed_workflows_fail_with_one_clear_line_and_change_nothing() {
    let sb = Sandbox::new();
    // A state database with one good run in it, so "unchanged" means something.
    diamond(&sb, 2, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    let state_dir = sb.path().join(".leo");
    let runs_before = sb.leo_json(&["list", "--json"]);
    let before = digest_files(&state_dir);
    if sb.state_url().is_none() {
        assert!(before.iter().any(|(n, _)| n == "state.db"));
    }

    let all = cases();
    assert!(all.len() >= 15);
    let mut failures = Vec::new();
    for (name, content, line, field, words) in all {
        let file = format!("{name}.toml");
        sb.write(&file, &content);
        for cmd in ["validate", "run", "plan"] {
            let out = sb.leo(&[cmd, &file]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let lines: Vec<&str> = err.lines().collect();
            let prefix = format!("error: {file}:{line}:");
            let field_part = format!(": {field}: ");
            let ok = out.status.code() == Some(2)
                && lines.len() == 1
                && lines[0].starts_with(&prefix)
                && lines[0].contains(&field_part)
                && lines[0].contains(words);
            if !ok {
                failures.push(format!(
                    "{name} ({cmd}): exit {:?}, want `{prefix}<col>{field_part}…{words}…`, got:\n{err}",
                    out.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        digest_files(&state_dir),
        before,
        "the state database changed"
    );
    assert_eq!(sb.leo_json(&["list", "--json"]), runs_before);
}

#[test]
fn without_a_state_database_an_invalid_run_creates_none() {
    let sb = Sandbox::new();
    sb.write(
        "bad.toml",
        "[workflow]\nname = \"x\"\n[stages.a]\nplugin = \"nope\"\n",
    );
    let out = sb.leo(&["run", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !sb.path().join(".leo").exists(),
        "an invalid workflow must not create state"
    );
}
