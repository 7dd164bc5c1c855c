//! `tug cordon NODE` and `tug uncordon NODE`: set or clear the node's
//! `spec.unschedulable` with a merge patch. The scheduler leaves a cordoned node out
//! of every new placement; the pods already there keep running (see `tug drain`).

use serde_json::{Value, json};
use tugboat_api::resource::NODES;
use tugboat_api::{Client, PatchType};

use crate::args::CordonArgs;
use crate::context::Context;
use crate::output::qualified_name;

pub async fn run(args: CordonArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let line = set_unschedulable(&client, &args.node, true).await?;
    writeln!(ctx.out, "{line}")?;
    Ok(())
}

pub async fn uncordon(args: CordonArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let line = set_unschedulable(&client, &args.node, false).await?;
    writeln!(ctx.out, "{line}")?;
    Ok(())
}

/// Makes the node (un)schedulable; returns kubectl's line about it
/// (`node/node-1 cordoned`, `node/node-1 already uncordoned`).
pub async fn set_unschedulable(
    client: &Client,
    node: &str,
    unschedulable: bool,
) -> anyhow::Result<String> {
    let current = client.get(&NODES, None, node).await?;
    let verb = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    let name = qualified_name(&NODES, node);
    if is_unschedulable(&current) == unschedulable {
        return Ok(format!("{name} already {verb}"));
    }
    // Uncordoning removes the field, as kubectl's patch does (false is its default).
    let value = if unschedulable {
        json!(true)
    } else {
        Value::Null
    };
    client
        .patch(
            &NODES,
            None,
            node,
            &json!({"spec": {"unschedulable": value}}),
            PatchType::Merge,
        )
        .await?;
    Ok(format!("{name} {verb}"))
}

pub fn is_unschedulable(node: &Value) -> bool {
    node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
}
