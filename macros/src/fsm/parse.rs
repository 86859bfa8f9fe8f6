//! Parsing the `fsm!` input into a syntax tree; structural mistakes
//! (duplicate or missing header keys, duplicate clauses) are reported here
//! with the span of the offending token.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Path, Token, Type, braced, bracketed, punctuated::Punctuated};

/// A whole `fsm!` invocation.
pub struct FsmInput {
    pub state_ty: Type,
    pub event_ty: Type,
    pub context_ty: Type,
    /// `None` when the header leaves out `action:` (the machine uses `NoAction`).
    pub action_ty: Option<Type>,
    pub initial: Expr,
    /// The states of `terminal: S::A, S::B;` (empty without the key).
    pub terminals: Vec<Path>,
    pub blocks: Vec<StateBlock>,
    pub unhandled: Option<Targeted>,
}

/// `state Path { ... }` or `state _ { ... }`.
pub struct StateBlock {
    /// `None` for the any-state block.
    pub state: Option<Path>,
    pub on: Vec<OnClause>,
    pub on_entry: Option<Expr>,
    pub on_exit: Option<Expr>,
    pub timeout: Option<TimeoutClause>,
}

/// A handler expression, after `sync` when it has the marker.
pub struct Handler {
    pub expr: Expr,
    /// Written `sync |..| ...`: returns its result, not a future.
    pub sync: bool,
}

/// `[Targets] handler`, the targets optional.
pub struct Targeted {
    pub targets: Option<Vec<Path>>,
    pub handler: Handler,
}

/// `on Event => [Targets] handler;`
pub struct OnClause {
    pub event: Path,
    pub body: Targeted,
}

/// `timeout <duration> => [Targets] handler;` or `timeout <duration>;`
pub struct TimeoutClause {
    pub after: Expr,
    pub body: Option<Targeted>,
}

/// Every header key, in the order of the slots `parse_header` fills.
const HEADER_KEYS: [&str; 6] = ["state", "event", "context", "action", "initial", "terminal"];

/// The variant name a path designates: its last segment.
pub fn variant_name(path: &Path) -> String {
    path.segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default()
}

fn is_header_key(input: ParseStream) -> bool {
    input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::])
}

/// The header's values, each given at most once.
#[derive(Default)]
struct Header {
    types: [Option<Type>; 4],
    initial: Option<Expr>,
    terminals: Option<Vec<Path>>,
}

fn parse_header(input: ParseStream) -> syn::Result<Header> {
    let mut header = Header::default();
    while is_header_key(input) {
        let key: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let name = key.to_string();
        let Some(index) = HEADER_KEYS.iter().position(|k| *k == name) else {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown header key `{name}`; the header keys are `state`, `event`, `context`, \
                     `action` (optional), `initial` and `terminal` (optional)"
                ),
            ));
        };
        let duplicate = match index {
            4 => header.initial.is_some(),
            5 => header.terminals.is_some(),
            i => header.types[i].is_some(),
        };
        if duplicate {
            return Err(syn::Error::new(
                key.span(),
                format!("duplicate header key `{name}`: each header key is given once"),
            ));
        }
        match index {
            4 => header.initial = Some(input.parse()?),
            5 => header.terminals = Some(parse_terminals(input)?),
            i => header.types[i] = Some(input.parse()?),
        }
        input.parse::<Token![;]>()?;
    }
    let present = [
        ("state", header.types[0].is_some()),
        ("event", header.types[1].is_some()),
        ("context", header.types[2].is_some()),
        ("initial", header.initial.is_some()),
    ];
    let missing: Vec<String> = present
        .into_iter()
        .filter(|(_, given)| !given)
        .map(|(k, _)| format!("`{k}`"))
        .collect();
    if !missing.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "missing header key(s): {}; an fsm! starts with `state: S; event: E; context: C; \
                 initial: <expr>;` (`action: A;` and `terminal: S::X, ..;` are optional)",
                missing.join(", ")
            ),
        ));
    }
    Ok(header)
}

/// `S::A, S::B` up to the `;`, each state once.
fn parse_terminals(input: ParseStream) -> syn::Result<Vec<Path>> {
    let list = Punctuated::<Path, Token![,]>::parse_separated_nonempty(input)?;
    let mut terminals: Vec<Path> = Vec::new();
    for path in list {
        let name = variant_name(&path);
        if terminals.iter().any(|t| variant_name(t) == name) {
            return Err(syn::Error::new_spanned(
                &path,
                format!("state `{name}` is listed twice in `terminal`"),
            ));
        }
        terminals.push(path);
    }
    Ok(terminals)
}

impl Parse for FsmInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let header = parse_header(input)?;
        let [state_ty, event_ty, context_ty, action_ty] = header.types;
        let (Some(state_ty), Some(event_ty), Some(context_ty), Some(initial)) =
            (state_ty, event_ty, context_ty, header.initial)
        else {
            return Err(syn::Error::new(Span::call_site(), "incomplete fsm! header"));
        };
        let mut blocks: Vec<StateBlock> = Vec::new();
        let mut unhandled = None;
        while !input.is_empty() {
            let keyword: Ident = input.parse()?;
            match keyword.to_string().as_str() {
                "state" => {
                    let block = parse_state_block(input)?;
                    check_block_unique(&blocks, &block, &keyword)?;
                    blocks.push(block);
                }
                "unhandled" => {
                    if unhandled.is_some() {
                        return Err(syn::Error::new(
                            keyword.span(),
                            "duplicate `unhandled` hook: a machine has at most one",
                        ));
                    }
                    input.parse::<Token![=>]>()?;
                    unhandled = Some(parse_targeted(input)?);
                    if !input.is_empty() {
                        input.parse::<Token![;]>()?;
                    }
                }
                other if HEADER_KEYS.contains(&other) && input.peek(Token![:]) => {
                    return Err(syn::Error::new(
                        keyword.span(),
                        format!("header key `{other}` after a state block: the header comes first"),
                    ));
                }
                other => {
                    return Err(syn::Error::new(
                        keyword.span(),
                        format!("expected `state` or `unhandled`, found `{other}`"),
                    ));
                }
            }
        }
        Ok(FsmInput {
            state_ty,
            event_ty,
            context_ty,
            action_ty,
            initial,
            terminals: header.terminals.unwrap_or_default(),
            blocks,
            unhandled,
        })
    }
}

fn check_block_unique(
    blocks: &[StateBlock],
    block: &StateBlock,
    keyword: &Ident,
) -> syn::Result<()> {
    let clash = blocks.iter().any(|b| match (&b.state, &block.state) {
        (None, None) => true,
        (Some(a), Some(b)) => variant_name(a) == variant_name(b),
        _ => false,
    });
    if !clash {
        return Ok(());
    }
    Err(match &block.state {
        None => syn::Error::new(
            keyword.span(),
            "duplicate any-state block `state _`: merge the two blocks",
        ),
        Some(path) => syn::Error::new_spanned(
            path,
            format!(
                "state `{}` has two blocks: merge them into one",
                variant_name(path)
            ),
        ),
    })
}

fn parse_state_block(input: ParseStream) -> syn::Result<StateBlock> {
    let state = if input.peek(Token![_]) {
        input.parse::<Token![_]>()?;
        None
    } else {
        Some(input.parse::<Path>()?)
    };
    let body;
    braced!(body in input);
    let mut block = StateBlock {
        state,
        on: Vec::new(),
        on_entry: None,
        on_exit: None,
        timeout: None,
    };
    let state_name = block
        .state
        .as_ref()
        .map(variant_name)
        .unwrap_or_else(|| "_".into());
    while !body.is_empty() {
        let keyword: Ident = body.parse()?;
        let name = keyword.to_string();
        let in_any_state = block.state.is_none() && name != "on";
        if in_any_state && ["on_entry", "on_exit", "timeout"].contains(&name.as_str()) {
            return Err(syn::Error::new(
                keyword.span(),
                format!(
                    "`{name}` is not allowed in the any-state block `state _`; it takes only `on` clauses"
                ),
            ));
        }
        let twice = |what: &str| {
            syn::Error::new(
                keyword.span(),
                format!("state `{state_name}` has two `{what}` clauses: a state has at most one"),
            )
        };
        match name.as_str() {
            "on" => {
                let clause = parse_on(&body)?;
                let event = variant_name(&clause.event);
                if block.on.iter().any(|c| variant_name(&c.event) == event) {
                    return Err(syn::Error::new_spanned(
                        &clause.event,
                        format!(
                            "two handlers for event `{event}` in state `{state_name}`: keep one"
                        ),
                    ));
                }
                block.on.push(clause);
            }
            "on_entry" | "on_exit" => {
                body.parse::<Token![=>]>()?;
                let hook: Expr = body.parse()?;
                let slot = if name == "on_entry" {
                    &mut block.on_entry
                } else {
                    &mut block.on_exit
                };
                if slot.is_some() {
                    return Err(twice(&name));
                }
                *slot = Some(hook);
            }
            "timeout" => {
                if block.timeout.is_some() {
                    return Err(twice("timeout"));
                }
                let after: Expr = body.parse()?;
                let handler = if body.peek(Token![=>]) {
                    body.parse::<Token![=>]>()?;
                    Some(parse_targeted(&body)?)
                } else {
                    None
                };
                block.timeout = Some(TimeoutClause {
                    after,
                    body: handler,
                });
            }
            other => {
                return Err(syn::Error::new(
                    keyword.span(),
                    format!(
                        "expected `on`, `on_entry`, `on_exit` or `timeout` in a state block, found `{other}`"
                    ),
                ));
            }
        }
        // `;` ends every clause; it may be left out after the last one.
        if !body.is_empty() {
            body.parse::<Token![;]>()?;
        }
    }
    Ok(block)
}

fn parse_on(body: ParseStream) -> syn::Result<OnClause> {
    let event: Path = body.parse()?;
    body.parse::<Token![=>]>()?;
    Ok(OnClause {
        event,
        body: parse_targeted(body)?,
    })
}

/// `[S::A, S::B] handler` or `handler`; the handler may start with `sync`.
fn parse_targeted(input: ParseStream) -> syn::Result<Targeted> {
    let targets = if input.peek(syn::token::Bracket) {
        let inner;
        bracketed!(inner in input);
        let list = Punctuated::<Path, Token![,]>::parse_terminated(&inner)?;
        Some(list.into_iter().collect())
    } else {
        None
    };
    let sync = is_sync_marker(input);
    if sync {
        input.parse::<Ident>()?;
    }
    Ok(Targeted {
        targets,
        handler: Handler {
            expr: input.parse()?,
            sync,
        },
    })
}

/// Whether the input starts with the `sync` marker: the word `sync`
/// followed by a closure (`|`, `||`, `move`) or a path to a function. A
/// handler expression cannot start that way, so the marker is unambiguous.
fn is_sync_marker(input: ParseStream) -> bool {
    let fork = input.fork();
    match fork.parse::<Ident>() {
        Ok(word) if word == "sync" => {
            fork.peek(Token![|])
                || fork.peek(Token![||])
                || fork.peek(Token![move])
                || fork.peek(Ident)
                || fork.peek(Token![::])
        }
        _ => false,
    }
}
