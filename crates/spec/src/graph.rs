//! The stage graph: edges run from a dependency to its dependent.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::model::{InputRef, Workflow};

#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

impl Dag {
    /// Builds the graph; on a cycle returns it as `[a, b, a]`.
    pub fn new(workflow: &Workflow) -> Result<Dag, Vec<String>> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for name in workflow.stages.keys() {
            index.insert(name.clone(), graph.add_node(name.clone()));
        }
        for (name, stage) in &workflow.stages {
            for dep in &stage.needs {
                graph.add_edge(index[dep], index[name], ());
            }
        }
        match stable_toposort(&graph) {
            Some(order) => Ok(Dag {
                graph,
                index,
                order,
            }),
            None => Err(find_cycle(&graph)),
        }
    }

    /// Stages in an order where every stage comes after its dependencies.
    pub fn topo_order(&self) -> &[String] {
        &self.order
    }

    pub fn dependencies(&self, stage: &str) -> Vec<String> {
        self.neighbors(stage, Direction::Incoming)
    }

    pub fn dependents(&self, stage: &str) -> Vec<String> {
        self.neighbors(stage, Direction::Outgoing)
    }

    fn neighbors(&self, stage: &str, dir: Direction) -> Vec<String> {
        let Some(&n) = self.index.get(stage) else {
            return Vec::new();
        };
        let mut v: Vec<String> = self
            .graph
            .neighbors_directed(n, dir)
            .map(|m| self.graph[m].clone())
            .collect();
        v.sort();
        v
    }

    /// Renders the graph; input edges are labelled with the output they carry.
    pub fn render(&self, workflow: &Workflow, format: GraphFormat) -> String {
        let mut edges = Vec::new();
        for (name, stage) in &workflow.stages {
            let mut labelled = BTreeSet::new();
            for input in stage.inputs.values() {
                if let InputRef::Stage {
                    stage: from,
                    output,
                } = input
                {
                    edges.push((from.clone(), name.clone(), Some(output.clone())));
                    labelled.insert(from.clone());
                }
            }
            for dep in &stage.needs {
                if !labelled.contains(dep) {
                    edges.push((dep.clone(), name.clone(), None));
                }
            }
        }
        edges.sort();
        edges.dedup();
        let mut out = String::new();
        match format {
            GraphFormat::Dot => {
                out.push_str(&format!(
                    "digraph \"{}\" {{\n  rankdir=LR;\n",
                    escape(&workflow.name)
                ));
                for name in &self.order {
                    let plugin = workflow.stages[name].plugin.to_string();
                    out.push_str(&format!(
                        "  \"{}\" [shape=box, label=\"{}\\n({})\"];\n",
                        escape(name),
                        escape(name),
                        escape(&plugin)
                    ));
                }
                for (from, to, label) in edges {
                    match label {
                        Some(l) => out.push_str(&format!(
                            "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                            escape(&from),
                            escape(&to),
                            escape(&l)
                        )),
                        None => out.push_str(&format!(
                            "  \"{}\" -> \"{}\";\n",
                            escape(&from),
                            escape(&to)
                        )),
                    }
                }
                out.push_str("}\n");
            }
            GraphFormat::Mermaid => {
                out.push_str("flowchart LR\n");
                for name in &self.order {
                    let plugin = workflow.stages[name].plugin.to_string();
                    out.push_str(&format!(
                        "  {}[\"{} ({})\"]\n",
                        mermaid_id(name),
                        name,
                        plugin.replace('"', "'")
                    ));
                }
                for (from, to, label) in edges {
                    match label {
                        Some(l) => out.push_str(&format!(
                            "  {} -->|{}| {}\n",
                            mermaid_id(&from),
                            l,
                            mermaid_id(&to)
                        )),
                        None => out.push_str(&format!(
                            "  {} --> {}\n",
                            mermaid_id(&from),
                            mermaid_id(&to)
                        )),
                    }
                }
            }
        }
        out
    }
}

/// Kahn's algorithm, taking ready stages alphabetically so the order is stable across runs.
fn stable_toposort(graph: &DiGraph<String, ()>) -> Option<Vec<String>> {
    let mut indegree: HashMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BTreeSet<(String, NodeIndex)> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| (graph[*n].clone(), *n))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        let (name, n) = first;
        order.push(name);
        for m in graph.neighbors_directed(n, Direction::Outgoing) {
            let d = indegree.get_mut(&m)?;
            *d -= 1;
            if *d == 0 {
                ready.insert((graph[m].clone(), m));
            }
        }
    }
    (order.len() == graph.node_count()).then_some(order)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_id(s: &str) -> String {
    s.replace('-', "_")
}

/// A cycle as a closed path `[a, b, ..., a]`, starting at its alphabetically first stage.
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    let scc = tarjan_scc(graph)
        .into_iter()
        .filter(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .min_by_key(|c| c.iter().map(|n| graph[*n].clone()).min())
        .unwrap_or_default();
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let Some(&start) = scc.iter().min_by_key(|n| graph[**n].clone()) else {
        return Vec::new();
    };
    // Depth-first search inside the component for a path back to `start`.
    let mut path = vec![start];
    let mut visited = BTreeSet::new();
    fn dfs(
        g: &DiGraph<String, ()>,
        members: &BTreeSet<NodeIndex>,
        start: NodeIndex,
        path: &mut Vec<NodeIndex>,
        visited: &mut BTreeSet<NodeIndex>,
    ) -> bool {
        let Some(&cur) = path.last() else {
            return false;
        };
        let mut next: Vec<NodeIndex> = g.neighbors(cur).filter(|n| members.contains(n)).collect();
        next.sort_by_key(|n| g[*n].clone());
        for n in next {
            if n == start {
                path.push(n);
                return true;
            }
            if visited.insert(n) {
                path.push(n);
                if dfs(g, members, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    dfs(graph, &members, start, &mut path, &mut visited);
    path.into_iter().map(|n| graph[n].clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn three_cycle_is_reported_in_order() {
        let text = "[workflow]\nname = \"t\"\n[stages.a]\nplugin = \"shell\"\nneeds = [\"c\"]\n\
                    [stages.b]\nplugin = \"shell\"\nneeds = [\"a\"]\n[stages.c]\nplugin = \"shell\"\nneeds = [\"b\"]\n";
        let err = crate::load_str(Path::new("w.toml"), text.into()).unwrap_err();
        assert!(err.message.ends_with("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn diamond_order_and_render() {
        let text = "[workflow]\nname = \"d\"\n[stages.a]\nplugin = \"shell\"\n\
                    [stages.b]\nplugin = \"shell\"\ninputs = { x = \"a.out\" }\n\
                    [stages.c]\nplugin = \"shell\"\nneeds = [\"a\"]\n\
                    [stages.d]\nplugin = \"shell\"\nneeds = [\"b\", \"c\"]\n";
        let loaded = crate::load_str(Path::new("w.toml"), text.into()).unwrap();
        let order = loaded.dag.topo_order();
        assert_eq!(order.first().map(String::as_str), Some("a"));
        assert_eq!(order.last().map(String::as_str), Some("d"));
        assert_eq!(loaded.dag.dependents("a"), vec!["b", "c"]);
        let dot = loaded.dag.render(&loaded.workflow, GraphFormat::Dot);
        assert!(dot.contains("\"a\" -> \"b\" [label=\"out\"];"), "{dot}");
        assert!(dot.contains("\"c\" -> \"d\";"), "{dot}");
        let mermaid = loaded.dag.render(&loaded.workflow, GraphFormat::Mermaid);
        assert!(mermaid.contains("a -->|out| b"), "{mermaid}");
    }
}
