//! Reading and validating a workflow file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::executor::{Executor, RawSlurm, SlurmOptions};
use crate::graph::Dag;
use crate::model::{InputRef, PluginRef, Resources, Stage, Storage, Workflow};
use crate::source::{Source, SpecError};
use crate::units::{parse_duration, parse_memory};
use crate::vars::Vars;

/// Longest timeout a stage may ask for; longer is almost certainly a unit mistake.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_RETRIES: u32 = 100;
const MAX_CPUS: u32 = 4096;
const MAX_GPUS: u32 = 1024;
const MAX_WORLD_SIZE: u32 = 4096;
/// URI schemes an external input may use.
const INPUT_SCHEMES: &[&str] = &["file", "s3", "gs", "az", "http", "https", "hf"];

/// A validated workflow with the file it came from and its graph.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub workflow: Workflow,
    pub source: Source,
    pub dag: Dag,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    workflow: RawHeader,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    defaults: RawDefaults,
    slurm: Option<RawSlurm>,
    #[serde(default)]
    stages: BTreeMap<String, RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    description: Option<String>,
    /// Every stage's executor unless the stage names its own.
    executor: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    state: Option<String>,
    artifacts: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    resources: Option<RawResources>,
    retries: Option<u32>,
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    plugin: String,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    params: toml::Table,
    resources: Option<RawResources>,
    retries: Option<u32>,
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    executor: Option<String>,
    slurm: Option<RawSlurm>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<u32>,
    gpus: Option<u32>,
    memory: Option<String>,
    world_size: Option<u32>,
}

/// Reads and validates a workflow file.
pub fn load_file(path: &Path) -> Result<Loaded, SpecError> {
    let bytes = std::fs::read(path).map_err(|e| SpecError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        field: "file".into(),
        message: format!("cannot read workflow: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let (line, column) = crate::source::line_col(
            std::str::from_utf8(&e.as_bytes()[..good]).unwrap_or(""),
            good,
        );
        SpecError {
            file: path.to_path_buf(),
            line,
            column,
            field: "file".into(),
            message: format!("invalid UTF-8 at byte {good}; workflow files must be UTF-8"),
        }
    })?;
    load_str(path, text)
}

/// Validates workflow text; `path` names it in errors and anchors `${workflow.dir}`.
pub fn load_str(path: &Path, text: String) -> Result<Loaded, SpecError> {
    let source = Source::new(path, text);
    if source.text().trim().is_empty() {
        return Err(source.error_at_offset(
            0,
            "workflow",
            "the file is empty; a workflow needs a [workflow] table with a name and at least one [stages.NAME]",
        ));
    }
    let raw: RawFile = toml::from_str(source.text()).map_err(|e| toml_error(&source, &e))?;
    let workflow = validate(&source, raw)?;
    let dag = Dag::new(&workflow).map_err(|cycle| {
        let first = cycle[0].clone();
        let field = if source.offset_of(&["stages", &first, "needs"]).is_some() {
            "needs"
        } else {
            "inputs"
        };
        source.error_at(
            &["stages", &first, field],
            format!("dependency cycle: {}", cycle.join(" -> ")),
        )
    })?;
    Ok(Loaded {
        workflow,
        source,
        dag,
    })
}

fn toml_error(source: &Source, e: &toml::de::Error) -> SpecError {
    let span = e.span().unwrap_or(0..0);
    let offset = span.start;
    let whole_document = span.start == 0 && span.end >= source.text().trim_end().len();
    let mut field = if whole_document {
        None
    } else {
        source
            .path_at(offset)
            .or_else(|| field_from_line(source.text(), offset))
    };
    // `missing field `x`` points at the table that lacks it: name the field itself.
    if let Some(missing) = e
        .message()
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        // `workflow` is the only required top-level table, so it is never nested.
        field = Some(match field {
            Some(table) if missing != "workflow" => format!("{table}.{missing}"),
            _ => missing.to_string(),
        });
    }
    source.error_at_offset(offset, field.as_deref().unwrap_or("toml"), e.message())
}

/// When the file does not parse at all, name the key on the error's line, under the closest
/// table header above it.
fn field_from_line(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let header_of = |line: &str| -> Option<String> {
        let header = line.trim().strip_prefix('[')?;
        let name = header.trim_start_matches('[').split(']').next()?.trim();
        (!name.is_empty()).then(|| name.replace(['"', ' '], ""))
    };
    let line = text[start..end].trim();
    if let Some(h) = header_of(line) {
        return Some(h);
    }
    let key = line.split('=').next()?.trim();
    if key.is_empty() || !line.contains('=') {
        return None;
    }
    let table = text[..start].lines().rev().find_map(header_of);
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn validate(source: &Source, raw: RawFile) -> Result<Workflow, SpecError> {
    let name = raw.workflow.name.trim().to_string();
    if name.is_empty() {
        return Err(source.error_at(&["workflow", "name"], "the workflow name is empty"));
    }
    let workflow_dir = source
        .file()
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".to_string());
    // A variable's value may use `${workflow.dir}` (data shipped beside the workflow), but not
    // other variables: no nesting, so no order or cycles to explain.
    let dir_only = Vars {
        values: Default::default(),
        workflow_dir,
    };
    let mut values = std::collections::BTreeMap::new();
    for (name, value) in raw.vars {
        let value = dir_only.substitute(&value).map_err(|(mut path, _)| {
            path.splice(0..0, ["vars".to_string(), name.clone()]);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            source.error_at(
                &path,
                "a variable's value may use only `${workflow.dir}`, not other variables",
            )
        })?;
        values.insert(name, value);
    }
    let vars = Vars {
        values,
        workflow_dir: dir_only.workflow_dir,
    };
    let sub = |path: &[&str], s: &str| -> Result<String, SpecError> {
        match vars.substitute_str(s) {
            Ok(toml::Value::String(v)) => Ok(v),
            Ok(other) => Ok(other.to_string()),
            Err(m) => Err(source.error_at(path, m)),
        }
    };

    let storage = Storage {
        state: raw
            .storage
            .state
            .as_deref()
            .map(|s| sub(&["storage", "state"], s))
            .transpose()?,
        artifacts: raw
            .storage
            .artifacts
            .as_deref()
            .map(|s| sub(&["storage", "artifacts"], s))
            .transpose()?,
    };

    if raw.stages.is_empty() {
        return Err(source.error_at(
            &["stages"],
            "the workflow has no stages; add at least one [stages.NAME]",
        ));
    }
    let default_executor = match &raw.workflow.executor {
        None => Executor::Local,
        Some(e) => Executor::parse(e).map_err(|m| source.error_at(&["workflow", "executor"], m))?,
    };
    let workflow_slurm = match &raw.slurm {
        None => SlurmOptions::default(),
        Some(t) => t.resolve().map_err(|(field, m)| {
            let mut p = vec!["slurm"];
            p.extend(field.iter().map(String::as_str));
            source.error_at(&p, m)
        })?,
    };
    let names: BTreeSet<&str> = raw.stages.keys().map(String::as_str).collect();
    let mut stages = BTreeMap::new();
    for (stage_name, st) in &raw.stages {
        let at = |field: &[&str]| -> Vec<String> {
            let mut p = vec!["stages".to_string(), stage_name.clone()];
            p.extend(field.iter().map(|s| s.to_string()));
            p
        };
        let err = |field: &[&str], msg: String| {
            let p = at(field);
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            source.error_at(&p, msg)
        };
        if !valid_name(stage_name) {
            return Err(err(
                &[],
                format!("stage name `{stage_name}` may only use letters, digits, `_` and `-`"),
            ));
        }

        let plugin_text = sub(
            &at(&["plugin"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            &st.plugin,
        )?;
        let plugin = if let Some(path) = plugin_text.strip_prefix("exec:") {
            if path.trim().is_empty() {
                return Err(err(
                    &["plugin"],
                    "`exec:` needs a path to an executable".into(),
                ));
            }
            PluginRef::Exec(resolve_exec(&vars.workflow_dir, path.trim()))
        } else if plugin_text.trim().is_empty() {
            return Err(err(&["plugin"], "the plugin name is empty".into()));
        } else {
            PluginRef::Builtin(plugin_text.trim().to_string())
        };

        let mut needs = BTreeSet::new();
        for dep in &st.needs {
            if dep == stage_name {
                return Err(err(
                    &["needs"],
                    format!("stage `{stage_name}` cannot depend on itself"),
                ));
            }
            if !names.contains(dep.as_str()) {
                return Err(err(
                    &["needs"],
                    format!("stage `{dep}` does not exist{}", did_you_mean(dep, &names)),
                ));
            }
            needs.insert(dep.clone());
        }

        let mut inputs = BTreeMap::new();
        for (input_name, reference) in &st.inputs {
            let field = ["inputs", input_name.as_str()];
            let reference = sub(
                &at(&field).iter().map(String::as_str).collect::<Vec<_>>(),
                reference,
            )?;
            let input = parse_input(&reference).map_err(|m| err(&field, m))?;
            if let InputRef::Stage { stage, .. } = &input {
                if stage == stage_name {
                    return Err(err(
                        &field,
                        format!("stage `{stage_name}` cannot read its own output"),
                    ));
                }
                if !names.contains(stage.as_str()) {
                    return Err(err(
                        &field,
                        format!(
                            "stage `{stage}` does not exist{}",
                            did_you_mean(stage, &names)
                        ),
                    ));
                }
                needs.insert(stage.clone());
            }
            inputs.insert(input_name.clone(), input);
        }

        let params = vars
            .substitute(&toml::Value::Table(st.params.clone()))
            .map_err(|(path, m)| {
                let mut p = vec!["params"];
                p.extend(path.iter().map(String::as_str));
                err(&p, m)
            })?;
        let params = toml_to_json(&params);

        let resources = {
            let d = raw.defaults.resources.clone().unwrap_or_default();
            let r = st.resources.clone().unwrap_or_default();
            let cpus = r.cpus.or(d.cpus).unwrap_or(1);
            let gpus = r.gpus.or(d.gpus).unwrap_or(0);
            if cpus > MAX_CPUS {
                return Err(err(
                    &["resources", "cpus"],
                    format!("{cpus} cpus is more than any machine has (max {MAX_CPUS})"),
                ));
            }
            if gpus > MAX_GPUS {
                return Err(err(
                    &["resources", "gpus"],
                    format!("{gpus} gpus is more than any machine has (max {MAX_GPUS})"),
                ));
            }
            let memory = match r.memory.as_deref().or(d.memory.as_deref()) {
                Some(m) => Some(parse_memory(m).map_err(|e| err(&["resources", "memory"], e))?),
                None => None,
            };
            // One process per GPU unless the stage says otherwise.
            let (world_size, world_size_at) = match (r.world_size, d.world_size) {
                (Some(n), _) => (n, at(&["resources", "world_size"])),
                (None, Some(n)) => (
                    n,
                    vec!["defaults".into(), "resources".into(), "world_size".into()],
                ),
                (None, None) => (gpus.max(1), Vec::new()),
            };
            if world_size == 0 || world_size > MAX_WORLD_SIZE {
                let path: Vec<&str> = world_size_at.iter().map(String::as_str).collect();
                return Err(source.error_at(
                    &path,
                    format!(
                        "world_size {world_size} is out of range: a stage runs between 1 and {MAX_WORLD_SIZE} processes"
                    ),
                ));
            }
            Resources {
                cpus,
                gpus,
                memory,
                world_size,
            }
        };

        let retries = st.retries.or(raw.defaults.retries).unwrap_or(0);
        if retries > MAX_RETRIES {
            return Err(err(
                &["retries"],
                format!("{retries} retries is too many (max {MAX_RETRIES})"),
            ));
        }

        let timeout = match st.timeout.as_deref().or(raw.defaults.timeout.as_deref()) {
            None => None,
            Some(t) => {
                let d = parse_duration(t).map_err(|e| err(&["timeout"], e))?;
                if d < Duration::from_secs(1) || d > MAX_TIMEOUT {
                    return Err(err(
                        &["timeout"],
                        format!("timeout `{t}` is out of range: use between 1s and 365days"),
                    ));
                }
                Some(d)
            }
        };

        let mut env = BTreeMap::new();
        for (k, v) in raw.defaults.env.iter().chain(st.env.iter()) {
            if !valid_env_name(k) {
                return Err(err(
                    &["env", k],
                    format!("`{k}` is not a valid environment variable name"),
                ));
            }
            let path = at(&["env", k]);
            if crate::vars::looks_secret(k) && !v.contains("${secret.") {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                return Err(source.error_at(
                    &path,
                    format!(
                        "`{k}` looks like a credential: write `{k} = \"${{secret.{k}}}\"` and export {k} \
                         where leo runs (a literal value would be stored with the run)"
                    ),
                ));
            }
            let v = match vars.substitute_env_str(v) {
                Ok(toml::Value::String(v)) => v,
                Ok(other) => other.to_string(),
                Err(m) => {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    return Err(source.error_at(&path, m));
                }
            };
            env.insert(k.clone(), v);
        }

        let executor = match &st.executor {
            None => default_executor,
            Some(e) => Executor::parse(e).map_err(|m| err(&["executor"], m))?,
        };
        let slurm = match &st.slurm {
            None => workflow_slurm.clone(),
            Some(t) => t
                .resolve()
                .map_err(|(field, m)| {
                    let mut p = vec!["slurm"];
                    p.extend(field.iter().map(String::as_str));
                    err(&p, m)
                })?
                .over(&workflow_slurm),
        };
        let nodes = slurm.nodes.unwrap_or(1);
        if executor == Executor::Slurm && !resources.world_size.is_multiple_of(nodes) {
            let field = if st.slurm.as_ref().is_some_and(|t| t.nodes.is_some()) {
                at(&["slurm", "nodes"])
            } else {
                vec!["slurm".into(), "nodes".into()]
            };
            let field: Vec<&str> = field.iter().map(String::as_str).collect();
            return Err(source.error_at(
                &field,
                format!(
                    "{} ranks (world_size) cannot be spread evenly over {nodes} nodes",
                    resources.world_size
                ),
            ));
        }

        stages.insert(
            stage_name.clone(),
            Stage {
                name: stage_name.clone(),
                plugin,
                needs: needs.into_iter().collect(),
                inputs,
                params,
                resources,
                retries,
                timeout,
                env,
                executor,
                slurm,
            },
        );
    }

    Ok(Workflow {
        name,
        description: raw.workflow.description,
        storage,
        stages,
    })
}

fn parse_input(reference: &str) -> Result<InputRef, String> {
    if reference.contains("://") {
        let url = url::Url::parse(reference)
            .map_err(|e| format!("`{reference}` is not a valid URI: {e}"))?;
        if !INPUT_SCHEMES.contains(&url.scheme()) {
            return Err(format!(
                "unsupported URI scheme `{}` in `{reference}`; use one of {}",
                url.scheme(),
                INPUT_SCHEMES.join(", ")
            ));
        }
        return Ok(InputRef::External {
            uri: url.to_string(),
        });
    }
    match reference.split_once('.') {
        Some((stage, output)) if valid_name(stage) && valid_name(output) => Ok(InputRef::Stage {
            stage: stage.to_string(),
            output: output.to_string(),
        }),
        _ => Err(format!(
            "`{reference}` is neither `STAGE.OUTPUT` nor a URI such as file:///data/x.jsonl"
        )),
    }
}

fn resolve_exec(workflow_dir: &str, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() || !path.contains('/') {
        path.to_string()
    } else {
        Path::new(workflow_dir).join(p).display().to_string()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn did_you_mean(name: &str, known: &BTreeSet<&str>) -> String {
    let close = known.iter().find(|k| edit_distance(k, name) <= 2);
    match close {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// TOML to JSON; datetimes become RFC 3339 strings.
pub(crate) fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, SpecError> {
        load_str(Path::new("w.toml"), text.to_string())
    }

    const HEAD: &str = "[workflow]\nname = \"t\"\n";

    #[test]
    fn a_small_workflow_loads() {
        let w = load(&format!(
            "{HEAD}[vars]\nn = 4\n[defaults]\nretries = 2\n\
             [stages.a]\nplugin = \"shell\"\nparams = {{ run = \"echo ${{vars.n}}\", n = \"${{vars.n}}\" }}\n\
             [stages.b]\nplugin = \"shell\"\ninputs = {{ x = \"a.out\", raw = \"file:///tmp/x\" }}\ntimeout = \"2h\"\n\
             resources = {{ cpus = 2, memory = \"1GiB\" }}\n"
        ))
        .unwrap();
        let a = &w.workflow.stages["a"];
        assert_eq!(a.params["run"], "echo 4");
        assert_eq!(a.params["n"], 4);
        assert_eq!(a.retries, 2);
        let b = &w.workflow.stages["b"];
        assert_eq!(b.needs, vec!["a".to_string()]);
        assert_eq!(b.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(b.resources.memory, Some(1 << 30));
        assert_eq!(
            b.inputs["raw"],
            InputRef::External {
                uri: "file:///tmp/x".into()
            }
        );
    }

    fn first_line_error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nneeds = [\"a\"]\n"
        ));
        assert_eq!(
            e,
            "w.toml:5:1: stages.a.needs: stage `a` cannot depend on itself"
        );
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nretries = -1\n"
        ));
        assert!(e.starts_with("w.toml:5:11: stages.a.retries: "), "{e}");
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nbogus = 1\n"
        ));
        assert!(
            e.starts_with("w.toml:5:1: stages.a.bogus: unknown field `bogus`"),
            "{e}"
        );
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\n[stages.a]\nplugin = \"shell\"\n"
        ));
        assert!(e.starts_with("w.toml:5:") && e.contains("stages.a"), "{e}");
    }

    #[test]
    fn a_variable_may_use_the_workflow_dir_but_not_other_variables() {
        let w = load(&format!(
            "{HEAD}[vars]\ndata = \"${{workflow.dir}}/data\"\n\
             [stages.a]\nplugin = \"shell\"\ninputs = {{ raw = \"file://${{vars.data}}/x.txt\" }}\n"
        ))
        .unwrap();
        let InputRef::External { uri } = &w.workflow.stages["a"].inputs["raw"] else {
            panic!("not external")
        };
        assert!(
            uri.starts_with("file:///") && uri.ends_with("/data/x.txt"),
            "{uri}"
        );
        assert!(!uri.contains("${"), "{uri}");
        let e = first_line_error(&format!(
            "{HEAD}[vars]\na = 1\nb = \"${{vars.a}}\"\n[stages.a]\nplugin = \"shell\"\n"
        ));
        assert!(e.starts_with("w.toml:5:1: vars.b: "), "{e}");
        assert!(e.contains("only `${workflow.dir}`"), "{e}");
    }

    #[test]
    fn world_size_defaults_to_the_gpus() {
        let w = load(&format!(
            "{HEAD}[stages.cpu]\nplugin = \"shell\"\n\
             [stages.gpu]\nplugin = \"shell\"\nresources = {{ gpus = 4 }}\n\
             [stages.two]\nplugin = \"shell\"\nresources = {{ gpus = 4, world_size = 2 }}\n"
        ))
        .unwrap();
        let ws = |s: &str| w.workflow.stages[s].resources.world_size;
        assert_eq!((ws("cpu"), ws("gpu"), ws("two")), (1, 4, 2));

        let w = load(&format!(
            "{HEAD}[defaults.resources]\nworld_size = 3\n\
             [stages.a]\nplugin = \"shell\"\nresources = {{ gpus = 8 }}\n\
             [stages.b]\nplugin = \"shell\"\nresources = {{ world_size = 1 }}\n"
        ))
        .unwrap();
        let ws = |s: &str| w.workflow.stages[s].resources.world_size;
        assert_eq!((ws("a"), ws("b")), (3, 1));

        // Runs stored before `world_size` existed read back with one process.
        let stored: Resources = serde_json::from_str(r#"{"cpus": 2, "gpus": 1}"#).unwrap();
        assert_eq!(stored.world_size, 1);
    }

    #[test]
    fn world_size_errors_point_at_the_setting() {
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nresources = {{ cpus = 2, world_size = 0 }}\n"
        ));
        assert_eq!(
            e,
            "w.toml:5:25: stages.a.resources.world_size: world_size 0 is out of range: \
             a stage runs between 1 and 4096 processes"
        );
        let e = first_line_error(&format!(
            "{HEAD}[defaults.resources]\nworld_size = 5000\n[stages.a]\nplugin = \"shell\"\n"
        ));
        assert!(
            e.starts_with(
                "w.toml:4:1: defaults.resources.world_size: world_size 5000 is out of range"
            ),
            "{e}"
        );
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nresources = {{ world_size = -2 }}\n"
        ));
        assert!(
            e.starts_with("w.toml:5:28: stages.a.resources.world_size: invalid value"),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_printed_as_cycles() {
        let e = first_line_error(&format!(
            "{HEAD}[stages.a]\nplugin = \"shell\"\nneeds = [\"b\"]\n[stages.b]\nplugin = \"shell\"\nneeds = [\"a\"]\n"
        ));
        assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
        assert!(e.starts_with("w.toml:5:1: stages.a.needs"), "{e}");
    }

    #[test]
    fn missing_stage_suggests_a_name() {
        let e = first_line_error(&format!("{HEAD}[stages.prep]\nplugin = \"shell\"\n[stages.b]\nplugin = \"shell\"\nneeds = [\"perp\"]\n"));
        assert!(
            e.contains("stage `perp` does not exist (did you mean `prep`?)"),
            "{e}"
        );
    }
}
