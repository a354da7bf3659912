//! The workflow spec: a TOML file becomes a validated [`Workflow`] and its [`Dag`].
//!
//! Everything here is pure: no database, no store, no plugins. Plugin-specific validation
//! (params, declared outputs) happens in the engine, which uses [`Source`] to point its
//! errors at the right line of the file.

mod executor;
mod graph;
mod load;
mod model;
mod source;
mod units;
mod vars;

pub use executor::{Executor, RawSlurm, SlurmOptions};
pub use graph::{Dag, GraphFormat};
pub use load::{load_file, load_str, Loaded};
pub use model::{InputRef, PluginRef, Resources, Stage, Storage, Workflow};
pub use source::{Source, SpecError};
pub use units::{parse_duration, parse_memory};
pub use vars::looks_secret;
