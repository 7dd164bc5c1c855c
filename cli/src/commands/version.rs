//! `tug version`: the client's version and the server's `/version` gitVersion.

use serde_json::Value;

use crate::args::VersionArgs;
use crate::context::Context;

pub async fn run(args: VersionArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    writeln!(ctx.out, "Client Version: v{}", env!("CARGO_PKG_VERSION"))?;
    if args.client {
        return Ok(());
    }
    // The client line is out before the server is asked, so an unreachable server
    // still leaves the user knowing what they run, as with kubectl.
    ctx.out.flush()?;
    let client = ctx.client()?;
    let version = client.get_path("/version").await?;
    let git = version
        .get("gitVersion")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    writeln!(ctx.out, "Server Version: {git}")?;
    Ok(())
}
