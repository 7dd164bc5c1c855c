//! `tug get`: lists objects or fetches them by name, and prints them as kubectl does:
//! aligned tables (`-o wide` adds columns, `-A` a NAMESPACE column), whole objects
//! (`-o json|yaml`), or `kind/name` lines (`-o name`). `-w` then follows changes.

use std::sync::Arc;

use anyhow::bail;
use futures::StreamExt as _;
use jiff::Timestamp;
use serde_json::Value;
use tugboat_api::{Client, ListParams, ResourceInfo};
use tugboat_runtime::{Event, WatchParams, watcher};

use crate::args::{GetArgs, OutputFormat};
use crate::columns::{self, Layout};
use crate::context::Context;
use crate::error::{self, is_unreachable};
use crate::output::{self, name_of, qualified_name, with_type_meta};
use crate::table::{StickyColumns, render_rows};
use crate::target::{Target, parse_targets};

pub async fn run(args: GetArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let targets = parse_targets(&args.targets)?;
    let named = targets.iter().any(|t| t.name.is_some());
    if named && (args.selector.is_some() || args.field_selector.is_some()) {
        bail!(
            "a name cannot be given together with a selector (-l or --field-selector); use one or the other"
        );
    }
    let client = ctx.client()?;
    let namespace = (!args.all_namespaces).then(|| ctx.namespace().to_string());
    let layout = Layout {
        wide: args.output == Some(OutputFormat::Wide),
        all_namespaces: args.all_namespaces,
        show_labels: args.show_labels,
        now: Timestamp::now(),
    };
    let params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
    };
    if args.watch || args.watch_only {
        return watch(
            &client,
            &targets,
            namespace.as_deref(),
            params,
            &layout,
            &args,
            ctx,
        )
        .await;
    }

    // Objects grouped by type, in the order asked for.
    let mut groups: Vec<(&'static ResourceInfo, Vec<Value>)> = Vec::new();
    let mut errors = Vec::new();
    for t in &targets {
        let ns = namespace.as_deref().filter(|_| t.resource.namespaced);
        let found = match &t.name {
            None => list(&client, t.resource, ns, &params).await,
            // kubectl's -A with a name still looks in the current namespace.
            Some(name) => {
                let ns = t.resource.namespaced.then(|| ctx.namespace());
                client
                    .get(t.resource, ns, name)
                    .await
                    .map(|o| vec![with_type_meta(t.resource, o)])
                    .map_err(anyhow::Error::from)
            }
        };
        match found {
            Ok(objects) => match groups.last_mut() {
                Some((r, objs)) if *r == t.resource => objs.extend(objects),
                _ => groups.push((t.resource, objects)),
            },
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }

    let total: usize = groups.iter().map(|(_, objs)| objs.len()).sum();
    let single_named = targets.len() == 1 && named;
    match args.output {
        Some(OutputFormat::Json | OutputFormat::Yaml) => {
            let mut objects: Vec<Value> = groups.into_iter().flat_map(|(_, objs)| objs).collect();
            let value = if single_named && objects.len() == 1 {
                objects.remove(0)
            } else if single_named && objects.is_empty() {
                return error::collect(errors);
            } else {
                output::list(objects)
            };
            if args.output == Some(OutputFormat::Json) {
                output::write_json(ctx.out, &value)?;
            } else {
                output::write_yaml(ctx.out, &value)?;
            }
        }
        Some(OutputFormat::Name) => {
            for (r, objs) in &groups {
                for obj in objs {
                    writeln!(ctx.out, "{}", qualified_name(r, name_of(obj)))?;
                }
            }
        }
        None | Some(OutputFormat::Wide) => {
            let prefix_names = groups.len() > 1;
            let mut first = true;
            for (r, objs) in &groups {
                if objs.is_empty() {
                    continue;
                }
                let text = table(r, objs, &layout, prefix_names, &mut errors);
                if !first {
                    writeln!(ctx.out)?;
                }
                first = false;
                ctx.out.write_all(text.as_bytes())?;
            }
        }
    }
    if total == 0
        && errors.is_empty()
        && !matches!(args.output, Some(OutputFormat::Json | OutputFormat::Yaml))
    {
        // kubectl says this on stderr, so scripts reading stdout see an empty result.
        let cluster_wide = args.all_namespaces || targets.iter().all(|t| !t.resource.namespaced);
        if cluster_wide {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", ctx.namespace());
        }
    }
    error::collect(errors)
}

/// The items of a list, with `apiVersion` and `kind` filled in (events sorted by when
/// they were last seen, oldest first, so the latest is nearest the prompt).
async fn list(
    client: &Client,
    r: &'static ResourceInfo,
    ns: Option<&str>,
    params: &ListParams,
) -> anyhow::Result<Vec<Value>> {
    let list = client.list(r, ns, params).await?;
    let mut items: Vec<Value> = match list.get("items") {
        Some(Value::Array(items)) => items
            .iter()
            .cloned()
            .map(|o| with_type_meta(r, o))
            .collect(),
        _ => Vec::new(),
    };
    if r.kind == "Event" {
        items.sort_by_key(|o| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Event>(o.clone())
                .ok()
                .and_then(|e| columns::event_time(&e))
        });
    }
    Ok(items)
}

/// One type's table. With several types shown, names are prefixed with the type, as
/// kubectl does (`deployment.apps/web`). Objects that cannot be shown are reported.
fn table(
    r: &ResourceInfo,
    objs: &[Value],
    layout: &Layout,
    prefix_names: bool,
    errors: &mut Vec<anyhow::Error>,
) -> String {
    let mut rows = vec![columns::header(r, layout)];
    let name_col = usize::from(layout.all_namespaces && r.namespaced);
    for obj in objs {
        match columns::row(r, obj, layout) {
            Ok(mut cells) => {
                if prefix_names
                    && r.kind != "Event"
                    && let Some(cell) = cells.get_mut(name_col)
                {
                    *cell = qualified_name(r, cell);
                }
                rows.push(cells);
            }
            Err(e) => errors.push(e.into()),
        }
    }
    render_rows(&rows)
}

/// `-w`: the current table (unless `--watch-only`), then one line per change until
/// Ctrl-C. Reconnects from the last version seen when the server ends the stream, and
/// starts over from a fresh list when that version is too old (410 Gone).
async fn watch(
    client: &Client,
    targets: &[Target],
    namespace: Option<&str>,
    mut params: ListParams,
    layout: &Layout,
    args: &GetArgs,
    ctx: &mut Context<'_>,
) -> anyhow::Result<()> {
    let [target] = targets else {
        bail!(
            "watch is only supported on individual resources and resource collections, but {} were asked for",
            targets.len()
        );
    };
    let r = target.resource;
    let ns = if target.name.is_some() {
        r.namespaced.then(|| ctx.namespace().to_string())
    } else {
        namespace.filter(|_| r.namespaced).map(str::to_string)
    };
    if let Some(name) = &target.name {
        params.field_selector = Some(format!("metadata.name={name}"));
    }
    let mut printer = WatchPrinter {
        format: args.output,
        columns: StickyColumns::default(),
        header_printed: false,
        printed: 0,
    };

    let list = client.list(r, ns.as_deref(), &params).await?;
    let version = resource_version(&list);
    if !args.watch_only {
        let items: Vec<Value> = list
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned()
            .map(|o| with_type_meta(r, o))
            .collect();
        printer.initial(r, &items, layout, ctx)?;
    }

    // The shared watcher (tugboat-runtime) from the list's revision: it resumes
    // a watch the server ends and lists again on 410. A relist is not printed
    // again; changes after it are.
    let config = watcher::Config::new("tug get -w")
        .params(WatchParams {
            namespace: ns.clone(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
        })
        .start_from(version);
    let mut events = std::pin::pin!(watcher::watch_raw(Arc::new(client.clone()), r, config));
    loop {
        let event = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            e = events.next() => e,
        };
        match event {
            Some(Event::Apply(obj) | Event::Delete(obj)) => {
                let obj = with_type_meta(r, (*obj).clone());
                printer.event(r, &obj, layout, ctx)?;
            }
            Some(Event::Init | Event::InitApply(_) | Event::InitDone) => {}
            None => return Ok(()),
        }
    }
}

fn resource_version(list: &Value) -> Option<String> {
    list.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Prints a watch: the header once, every line padded to widths that only grow.
struct WatchPrinter {
    format: Option<OutputFormat>,
    columns: StickyColumns,
    header_printed: bool,
    printed: usize,
}

impl WatchPrinter {
    fn initial(
        &mut self,
        r: &ResourceInfo,
        items: &[Value],
        layout: &Layout,
        ctx: &mut Context<'_>,
    ) -> anyhow::Result<()> {
        if matches!(self.format, None | Some(OutputFormat::Wide)) {
            let mut rows = vec![columns::header(r, layout)];
            for obj in items {
                rows.push(columns::row(r, obj, layout)?);
            }
            if items.is_empty() {
                return Ok(());
            }
            self.columns.fit(&rows);
            for row in &rows {
                let line = self.columns.line(row);
                ctx.out.write_all(line.as_bytes())?;
            }
            self.header_printed = true;
            ctx.out.flush()?;
            return Ok(());
        }
        for obj in items {
            self.event(r, obj, layout, ctx)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        r: &ResourceInfo,
        obj: &Value,
        layout: &Layout,
        ctx: &mut Context<'_>,
    ) -> anyhow::Result<()> {
        // Ages are relative to now, not to when the watch began.
        let layout = Layout {
            now: Timestamp::now(),
            ..*layout
        };
        match self.format {
            None | Some(OutputFormat::Wide) => {
                let row = columns::row(r, obj, &layout)?;
                if !self.header_printed {
                    let header = columns::header(r, &layout);
                    self.columns.fit(&[header.clone(), row.clone()]);
                    let line = self.columns.line(&header);
                    ctx.out.write_all(line.as_bytes())?;
                    self.header_printed = true;
                }
                let line = self.columns.line(&row);
                ctx.out.write_all(line.as_bytes())?;
            }
            Some(OutputFormat::Name) => writeln!(ctx.out, "{}", qualified_name(r, name_of(obj)))?,
            Some(OutputFormat::Json) => output::write_json(ctx.out, obj)?,
            Some(OutputFormat::Yaml) => {
                if self.printed > 0 {
                    writeln!(ctx.out, "---")?;
                }
                output::write_yaml(ctx.out, obj)?;
            }
        }
        self.printed += 1;
        ctx.out.flush()?;
        Ok(())
    }
}
