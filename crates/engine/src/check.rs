//! Asks every stage's plugin to accept its params and name its outputs, and checks that every
//! `STAGE.OUTPUT` reference names an output that stage will produce.

use std::collections::BTreeMap;

use leo_spec::{InputRef, Loaded, SpecError, Workflow};

use crate::catalog::{Catalog, DescribeError, PluginInfo};

/// Names an output may not have: they are taken in the attempt folder that holds outputs.
const RESERVED_OUTPUTS: &[&str] = &["checkpoints"];

/// A workflow whose plugins accepted their params.
#[derive(Debug, Clone)]
pub struct Checked {
    pub workflow: Workflow,
    pub dag: leo_spec::Dag,
    pub plugins: BTreeMap<String, PluginInfo>,
}

/// Checks a freshly loaded file; errors point into it.
pub fn check(loaded: &Loaded, catalog: &Catalog) -> Result<Checked, SpecError> {
    let src = &loaded.source;
    check_workflow(&loaded.workflow, catalog, |path, msg| {
        src.error_at(path, msg)
    })
}

/// Checks a stored workflow (on resume), where there is no file to point into.
pub fn check_stored(
    workflow: &Workflow,
    catalog: &Catalog,
    origin: &str,
) -> Result<Checked, SpecError> {
    check_workflow(workflow, catalog, |path, msg| SpecError {
        file: origin.into(),
        line: 0,
        column: 0,
        field: path.join("."),
        message: msg,
    })
}

fn check_workflow(
    workflow: &Workflow,
    catalog: &Catalog,
    error_at: impl Fn(&[&str], String) -> SpecError,
) -> Result<Checked, SpecError> {
    // A stored workflow was validated when it was loaded, but may come from another version.
    for (name, stage) in &workflow.stages {
        for dep in &stage.needs {
            if !workflow.stages.contains_key(dep) {
                return Err(error_at(
                    &["stages", name, "needs"],
                    format!("stage `{dep}` does not exist"),
                ));
            }
        }
    }
    let dag = leo_spec::Dag::new(workflow).map_err(|cycle| {
        error_at(
            &["stages", &cycle[0], "needs"],
            format!("dependency cycle: {}", cycle.join(" -> ")),
        )
    })?;
    let mut plugins = BTreeMap::new();
    for (name, stage) in &workflow.stages {
        let info = catalog
            .describe(&stage.plugin, &stage.params)
            .map_err(|e| match e {
                DescribeError::Unknown(m) | DescribeError::Other(m) => {
                    error_at(&["stages", name, "plugin"], m)
                }
                DescribeError::Param(p) => {
                    let mut path = vec!["stages", name.as_str(), "params"];
                    path.extend(p.field.split('.').filter(|s| !s.is_empty()));
                    error_at(&path, p.message)
                }
            })?;
        if let Some(bad) = info
            .outputs
            .iter()
            .find(|o| RESERVED_OUTPUTS.contains(&o.as_str()))
        {
            return Err(error_at(
                &["stages", name, "params"],
                format!(
                    "output name `{bad}` is reserved (the attempt folder uses it); choose another"
                ),
            ));
        }
        plugins.insert(name.clone(), info);
    }
    for (name, stage) in &workflow.stages {
        for (input, reference) in &stage.inputs {
            if let InputRef::Stage {
                stage: from,
                output,
            } = reference
            {
                let outputs = &plugins[from].outputs;
                if !outputs.contains(output) {
                    return Err(error_at(
                        &["stages", name, "inputs", input],
                        format!(
                            "stage `{from}` has no output `{output}` (its outputs: {})",
                            if outputs.is_empty() {
                                "none".to_string()
                            } else {
                                outputs.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    }
    Ok(Checked {
        workflow: workflow.clone(),
        dag,
        plugins,
    })
}
