//! `troupe flows`: the flow definitions the journal recorded when runtimes
//! registered them (name, version, fingerprint, stages and edges), as a
//! table, JSON or a Mermaid diagram. Read-only, like every read command.

use serde::Serialize;
use troupe::records::{DefinitionRecord, FlowShape};
use troupe::store::Store;

use crate::error::CliError;
use crate::render::{Table, json, time};

/// `troupe flows`: one row per recorded definition, by name, then when recorded.
pub async fn list(store: &dyn Store, as_json: bool) -> Result<String, CliError> {
    let definitions = store.list_definitions(None).await?;
    if as_json {
        return json(&definitions);
    }
    let mut table = Table::new(&["NAME", "VERSION", "FINGERPRINT", "STAGES", "REGISTERED"]);
    for d in &definitions {
        table.row(vec![
            d.name.clone(),
            version(d.version),
            d.short_fingerprint().to_owned(),
            d.shape.stages.len().to_string(),
            time(d.registered_at),
        ]);
    }
    Ok(table.render())
}

fn version(version: Option<u32>) -> String {
    version.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// What `flows show` prints with `--json --mermaid`.
#[derive(Serialize)]
struct WithDiagram<'a> {
    #[serde(flatten)]
    definition: &'a DefinitionRecord,
    mermaid: String,
}

/// `troupe flows show NAME`: the definition of `name` under `version` (the
/// highest version recorded, the latest recorded of it, without one): its
/// stages and edges as tables, JSON, or a Mermaid `flowchart LR`.
pub async fn show(
    store: &dyn Store,
    name: &str,
    version: Option<u32>,
    mermaid: bool,
    as_json: bool,
) -> Result<String, CliError> {
    let recorded = store.list_definitions(Some(name)).await?;
    // Recording order breaks ties: the later record of a version wins.
    let found = recorded
        .iter()
        .enumerate()
        .filter(|(_, d)| version.is_none_or(|v| d.version == Some(v)))
        .max_by_key(|(i, d)| (d.version, *i))
        .map(|(_, d)| d)
        .ok_or_else(|| CliError::UnknownFlow {
            name: name.to_owned(),
            version,
        })?;
    match (as_json, mermaid) {
        (true, false) => json(found),
        (true, true) => json(&WithDiagram {
            definition: found,
            mermaid: diagram(&found.shape),
        }),
        (false, true) => Ok(diagram(&found.shape)),
        (false, false) => Ok(tables(found)),
    }
}

/// The definition's header line, its stages and its edges.
fn tables(d: &DefinitionRecord) -> String {
    let mut text = format!(
        "flow {}  version {}  fingerprint {}  registered {}\n",
        d.name,
        version(d.version),
        d.fingerprint,
        time(d.registered_at)
    );
    if let Some(input) = &d.shape.input {
        text.push_str(&format!("input {input}\n"));
    }
    text.push('\n');
    let mut stages = Table::new(&["STAGE", "KIND", "EVENTS", "MACHINE"]);
    for s in &d.shape.stages {
        stages.row(vec![
            s.name.clone(),
            s.kind.clone(),
            s.events.clone().unwrap_or_else(|| "-".into()),
            s.machine
                .as_deref()
                .map_or_else(|| "-".into(), |m| m.chars().take(12).collect()),
        ]);
    }
    text.push_str(&stages.render());
    text.push('\n');
    let mut edges = Table::new(&["FROM", "TO"]);
    for e in &d.shape.edges {
        edges.row(vec![e.from.clone(), e.to.clone()]);
    }
    text.push_str(&edges.render());
    text
}

/// A Mermaid `flowchart LR`: a node per stage (`s0`, `s1`, ... in
/// declaration order, labelled with its name and kind), an arrow per edge.
pub fn diagram(shape: &FlowShape) -> String {
    let mut text = String::from("flowchart LR\n");
    let index = |name: &str| shape.stages.iter().position(|s| s.name == name);
    for (i, s) in shape.stages.iter().enumerate() {
        // Quotes would end the label: Mermaid's entity for them.
        let label = format!("{} ({})", s.name, s.kind).replace('"', "#quot;");
        text.push_str(&format!("    s{i}[\"{label}\"]\n"));
    }
    for e in &shape.edges {
        if let (Some(from), Some(to)) = (index(&e.from), index(&e.to)) {
            text.push_str(&format!("    s{from} --> s{to}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::records::{DefinedEdge, DefinedStage};

    #[test]
    fn a_diagram_has_a_node_per_stage_and_an_arrow_per_edge() {
        let stage = |name: &str, kind: &str| DefinedStage {
            name: name.into(),
            kind: kind.into(),
            events: None,
            machine: None,
        };
        let shape = FlowShape {
            stages: vec![stage("read \"it\"", "source"), stage("sink", "sink")],
            edges: vec![DefinedEdge {
                from: "read \"it\"".into(),
                to: "sink".into(),
            }],
            input: None,
        };
        assert_eq!(
            diagram(&shape),
            "flowchart LR\n    s0[\"read #quot;it#quot; (source)\"]\n    \
             s1[\"sink (sink)\"]\n    s0 --> s1\n"
        );
    }
}
