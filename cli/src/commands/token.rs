//! `tug token create|list|delete`: join tokens for new nodes
//! (`K10<CA hash>::ID.SECRET`, for `tug agent --token`) and API tokens for
//! automation (`ID.SECRET`, a bearer token acting in one namespace with the
//! `view` or `edit` role). The secret is printed once, at creation; the
//! controller keeps only its hash.

use anyhow::bail;
use serde_json::{Value, json};

use crate::args::{TokenArgs, TokenCommand};
use crate::context::Context;
use crate::table::render_rows;

const TOKENS: &str = "/v1-tugboat/tokens";

pub async fn run(args: TokenArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match args.what {
        TokenCommand::Create {
            ttl,
            description,
            role,
        } => {
            let mut body = json!({
                "kind": if role.is_some() { "api" } else { "join" },
                "ttlSeconds": ttl.as_secs(),
                "description": description,
            });
            if let Some(role) = role {
                if role != "view" && role != "edit" {
                    bail!("--role: expected view or edit, got {role:?}");
                }
                body["role"] = json!(role);
                body["namespace"] = json!(ctx.namespace());
            } else if ctx.namespace_flag.is_some() {
                bail!(
                    "-n/--namespace is for API tokens (with --role); a join token has no namespace"
                );
            }
            let created = client.post_path(TOKENS, &body).await?;
            let token = created["token"].as_str().unwrap_or_default();
            writeln!(ctx.out, "{token}")?;
        }
        TokenCommand::List => {
            let list = client.get_path(TOKENS).await?;
            let mut rows = vec![vec![
                "ID".to_string(),
                "KIND".into(),
                "EXPIRES".into(),
                "NAMESPACE".into(),
                "ROLE".into(),
                "DESCRIPTION".into(),
            ]];
            let text = |v: &Value| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("<none>")
                    .to_string()
            };
            for t in list["items"].as_array().into_iter().flatten() {
                rows.push(vec![
                    text(&t["id"]),
                    text(&t["kind"]),
                    t["expires"].as_str().unwrap_or("<never>").to_string(),
                    text(&t["namespace"]),
                    text(&t["role"]),
                    text(&t["description"]),
                ]);
            }
            if rows.len() == 1 {
                writeln!(ctx.out, "No tokens.")?;
            } else {
                write!(ctx.out, "{}", render_rows(&rows))?;
            }
        }
        TokenCommand::Delete { ids } => {
            for id in ids {
                client.delete_path(&format!("{TOKENS}/{id}")).await?;
                writeln!(ctx.out, "token {id} deleted")?;
            }
        }
    }
    Ok(())
}
