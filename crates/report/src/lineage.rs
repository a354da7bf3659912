//! The run's lineage as an SVG: stages, external inputs (by URI) and stage outputs (by short
//! digest), laid out in columns by depth so edges run left to right. Written by hand (boxes,
//! paths, text): no graphviz at run time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::data::{depths, ReportData};
use crate::html::{esc, short_digest};

const NODE_W: f64 = 200.0;
const NODE_H: f64 = 44.0;
const COL_GAP: f64 = 70.0;
const ROW_GAP: f64 = 18.0;
const MARGIN: f64 = 16.0;
/// Vertical distance between the lanes of edges that skip columns.
const LANE_GAP: f64 = 8.0;
/// Characters of a label shown in a box (the full text is in its tooltip).
const LABEL_CHARS: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stage,
    External,
    Output,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub label: String,
    pub sub: String,
    /// The tooltip: everything known about the node.
    pub detail: String,
    /// A CSS class for the box (a stage's status).
    pub class: String,
    pub layer: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// Order-only (`needs` without an input): drawn dashed.
    pub order_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

impl Graph {
    fn add(&mut self, index: &mut BTreeMap<String, usize>, key: String, node: Node) -> usize {
        if let Some(&i) = index.get(&key) {
            self.nodes[i].layer = self.nodes[i].layer.max(node.layer);
            return i;
        }
        self.nodes.push(node);
        index.insert(key, self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    fn edge(&mut self, from: usize, to: usize, order_only: bool) {
        let e = Edge {
            from,
            to,
            order_only,
        };
        if !self.edges.contains(&e) {
            self.edges.push(e);
        }
    }
}

/// Stages in column `2·depth + 1`, their outputs in the next column, external inputs in
/// column 0: every edge goes to a column further right.
pub fn graph(data: &ReportData) -> Graph {
    let depth = depths(&data.stages);
    let mut g = Graph::default();
    let mut index = BTreeMap::new();
    let stage_layer = |s: &str| 2 * depth.get(s).copied().unwrap_or(0) + 1;
    for name in &data.order {
        let s = &data.stages[name];
        let ran = if s.cached {
            format!(
                "cached from {}",
                s.cached_from_run.as_deref().unwrap_or("an earlier run")
            )
        } else {
            s.status.clone()
        };
        let params = serde_json::to_string_pretty(&s.params).unwrap_or_default();
        let node = Node {
            kind: Kind::Stage,
            label: name.clone(),
            sub: format!("{} · {ran}", s.plugin),
            detail: format!(
                "stage {name}\nplugin {} {}\nstatus {ran}\nfingerprint {}\nparams {params}",
                s.plugin,
                s.plugin_version.as_deref().unwrap_or(""),
                s.fingerprint.as_deref().unwrap_or("-"),
            ),
            class: format!("status-{}", s.status),
            layer: stage_layer(name),
        };
        g.add(&mut index, format!("stage:{name}"), node);
    }
    for name in &data.order {
        let s = &data.stages[name];
        let me = index[&format!("stage:{name}")];
        for (output, digest) in &s.outputs {
            let out = g.add(
                &mut index,
                format!("out:{name}.{output}"),
                output_node(name, output, Some(digest), stage_layer(name) + 1),
            );
            g.edge(me, out, false);
        }
        let mut fed_by = Vec::new();
        for (input, info) in &s.inputs {
            let from = match (&info.stage, &info.output, &info.uri) {
                (Some(stage), Some(output), _) => {
                    fed_by.push(stage.clone());
                    let layer = if data.stages.contains_key(stage) {
                        stage_layer(stage) + 1
                    } else {
                        0
                    };
                    let out = g.add(
                        &mut index,
                        format!("out:{stage}.{output}"),
                        output_node(stage, output, info.digest.as_deref(), layer),
                    );
                    if let Some(&producer) = index.get(&format!("stage:{stage}")) {
                        g.edge(producer, out, false);
                    }
                    out
                }
                (_, _, Some(uri)) => g.add(
                    &mut index,
                    format!("uri:{uri}"),
                    Node {
                        kind: Kind::External,
                        label: uri.clone(),
                        sub: info
                            .digest
                            .as_deref()
                            .map_or_else(|| "external".into(), short_digest),
                        detail: format!(
                            "external input `{input}`\n{uri}\n{}",
                            info.digest.as_deref().unwrap_or("")
                        ),
                        class: "external".into(),
                        layer: 0,
                    },
                ),
                _ => continue,
            };
            g.edge(from, me, false);
        }
        for dep in &s.needs {
            if !fed_by.contains(dep) {
                if let Some(&d) = index.get(&format!("stage:{dep}")) {
                    g.edge(d, me, true);
                }
            }
        }
    }
    g
}

fn output_node(stage: &str, output: &str, digest: Option<&str>, layer: usize) -> Node {
    Node {
        kind: Kind::Output,
        label: format!("{stage}.{output}"),
        sub: digest.map_or_else(|| "not produced".into(), short_digest),
        detail: format!(
            "output `{output}` of stage {stage}\n{}",
            digest.unwrap_or("")
        ),
        class: "artifact".into(),
        layer,
    }
}

/// A box per node: columns by layer, rows in a column ordered by the mean row of the nodes
/// that point at them (fewer crossings), then by label.
pub fn layout(g: &Graph) -> Vec<Rect> {
    let layers = g.nodes.iter().map(|n| n.layer).max().map_or(0, |m| m + 1);
    let mut row = vec![0.0f64; g.nodes.len()];
    for layer in 0..layers {
        let mut members: Vec<(f64, &str, usize)> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.layer == layer)
            .map(|(i, n)| {
                let preds: Vec<f64> = g
                    .edges
                    .iter()
                    .filter(|e| e.to == i && g.nodes[e.from].layer < layer)
                    .map(|e| row[e.from])
                    .collect();
                let key = if preds.is_empty() {
                    f64::MAX
                } else {
                    preds.iter().sum::<f64>() / preds.len() as f64
                };
                (key, n.label.as_str(), i)
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        for (r, (_, _, i)) in members.into_iter().enumerate() {
            row[i] = r as f64;
        }
    }
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Rect {
            x: MARGIN + n.layer as f64 * (NODE_W + COL_GAP),
            y: MARGIN + row[i] * (NODE_H + ROW_GAP),
            w: NODE_W,
            h: NODE_H,
        })
        .collect()
}

/// The end of a long text (a URI's file name matters more than its scheme).
fn clip_tail(text: &str) -> String {
    let n = text.chars().count();
    if n <= LABEL_CHARS {
        text.to_string()
    } else {
        let tail: String = text.chars().skip(n - (LABEL_CHARS - 1)).collect();
        format!("…{tail}")
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        text.to_string()
    } else {
        let head: String = text.chars().take(LABEL_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// The graph as an `<svg>` element; every text escaped.
pub fn svg(g: &Graph) -> String {
    // Edges that skip columns run in lanes above the nodes, so they never cross a box: out
    // of the source into the column gap, up to their lane, across, down in the gap before
    // the target.
    let long: Vec<usize> = (0..g.edges.len())
        .filter(|&i| g.nodes[g.edges[i].to].layer > g.nodes[g.edges[i].from].layer + 1)
        .collect();
    let top = LANE_GAP * long.len() as f64;
    let rects: Vec<Rect> = layout(g)
        .into_iter()
        .map(|r| Rect { y: r.y + top, ..r })
        .collect();
    let width = rects.iter().map(|r| r.x + r.w).fold(0.0, f64::max) + MARGIN;
    let height = rects.iter().map(|r| r.y + r.h).fold(0.0, f64::max) + MARGIN;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    s.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#667"/></marker></defs>"##);
    for (i, e) in g.edges.iter().enumerate() {
        let (a, b) = (rects[e.from], rects[e.to]);
        let (x0, y0, x1, y1) = (a.x + a.w, a.y + a.h / 2.0, b.x, b.y + b.h / 2.0);
        let mid = (x0 + x1) / 2.0;
        let d = match long.iter().position(|&l| l == i) {
            Some(lane) => {
                let y = MARGIN / 2.0 + LANE_GAP * lane as f64;
                let (g0, g1) = (x0 + COL_GAP / 3.0, x1 - COL_GAP / 3.0);
                format!("M{x0},{y0} H{g0} V{y} H{g1} V{y1} H{x1}")
            }
            None => format!("M{x0},{y0} C{mid},{y0} {mid},{y1} {x1},{y1}"),
        };
        let dash = if e.order_only {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<path class="edge" d="{d}" fill="none" stroke="#667" stroke-width="1.4"{dash} marker-end="url(#arrow)"/>"##
        );
    }
    for (n, r) in g.nodes.iter().zip(&rects) {
        let kind = match n.kind {
            Kind::Stage => "stage",
            Kind::External => "external",
            Kind::Output => "output",
        };
        let rx = if n.kind == Kind::Stage { 6 } else { 16 };
        let _ = write!(
            s,
            r#"<g class="node {kind} {}"><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" rx="{rx}"/><text x="{}" y="{}" class="label">{}</text><text x="{}" y="{}" class="sub">{}</text></g>"#,
            esc(&n.class),
            esc(&n.detail),
            r.x,
            r.y,
            r.w,
            r.h,
            r.x + 10.0,
            r.y + 18.0,
            esc(&if n.kind == Kind::External {
                clip_tail(&n.label)
            } else {
                clip(&n.label)
            }),
            r.x + 10.0,
            r.y + 35.0,
            esc(&clip(&n.sub)),
        );
    }
    s.push_str("</svg>");
    s
}
