//! Code generation for `fsm!`: a `'static` table and one closure per kind of
//! clause, each a `match` on variants, handed to `::troupe::fsm::generated::machine`.
//!
//! Every pattern is the user's path followed by `{ .. }` and keeps the user's
//! span, so the compiler itself checks that each state and event names a
//! variant of the declared enum and points at the path when it does not.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{FsmInput, Handler, variant_name};

pub fn expand(input: FsmInput) -> TokenStream {
    let FsmInput {
        state_ty,
        event_ty,
        context_ty,
        action_ty,
        initial,
        terminals,
        blocks,
        unhandled,
    } = input;
    let action_ty = match action_ty {
        Some(ty) => quote!(#ty),
        None => quote!(::troupe::fsm::NoAction<#context_ty>),
    };
    let rt = quote!(::troupe::fsm::generated);
    let generics = quote!(#state_ty, #event_ty, #context_ty, #action_ty);
    let ctx_generics = quote!(#state_ty, #context_ty, #action_ty);
    let pat = |path: &syn::Path| quote_spanned!(path.span()=> #path { .. });

    let mut prelude = Vec::new();
    let mut state_names: Vec<String> = Vec::new();
    let mut event_names: Vec<String> = Vec::new();
    let mut handler_specs = Vec::new();
    let mut specific_arms = Vec::new();
    let mut any_arms = Vec::new();
    let mut specific_target_arms = Vec::new();
    let mut any_target_arms = Vec::new();
    let mut entry_arms = Vec::new();
    let mut exit_arms = Vec::new();
    let mut timeout_index_arms = Vec::new();
    let mut timeout_handler_arms = Vec::new();
    let mut timeout_specs = Vec::new();
    let mut entry_names = Vec::new();
    let mut exit_names = Vec::new();
    let mut target_checks = Vec::new();

    let mut clause_index = 0usize;
    for block in &blocks {
        let state_pat = block.state.as_ref().map(pat);
        let state_name = block.state.as_ref().map(variant_name);
        if let Some(name) = &state_name {
            state_names.push(name.clone());
        }
        for on in &block.on {
            let event_pat = pat(&on.event);
            let event_name = variant_name(&on.event);
            if !event_names.contains(&event_name) {
                event_names.push(event_name.clone());
            }
            let handler_ident = format_ident!("__troupe_on_{}", clause_index);
            let handler = &on.body.handler;
            prelude.push(bind_handler(&handler_ident, handler, &generics, true));
            let spec_state = match &state_name {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            let spec_targets = declared(&on.body.targets, &mut target_checks);
            let call = dispatch_call(&handler_ident, handler, quote!(__s, __e, __c));
            match &state_pat {
                Some(sp) => {
                    specific_arms.push(quote!((#sp, #event_pat) => #call,));
                    specific_target_arms.push(quote!((#sp, #event_pat) => #spec_targets,));
                }
                None => {
                    any_arms.push(quote!(#event_pat => #call,));
                    any_target_arms.push(quote!(#event_pat => #spec_targets,));
                }
            }
            let sync = handler.sync;
            handler_specs.push(quote! {
                ::troupe::fsm::HandlerSpec { state: #spec_state, event: #event_name, targets: #spec_targets, sync: #sync }
            });
            clause_index += 1;
        }
        let (Some(sp), Some(name)) = (&state_pat, &state_name) else {
            continue;
        };
        // A block with no clause still names a state: make the compiler check it.
        target_checks.push(quote!(#sp => {}));
        for (hook, arms, names, tag) in [
            (&block.on_entry, &mut entry_arms, &mut entry_names, "entry"),
            (&block.on_exit, &mut exit_arms, &mut exit_names, "exit"),
        ] {
            if let Some(hook) = hook {
                let ident = format_ident!("__troupe_{}_{}", tag, names.len());
                prelude.push(quote_spanned! {hook.span()=>
                    let #ident = #rt::hook::<#ctx_generics, _>(#hook);
                });
                arms.push(quote!(#sp => #ident(__s, __c),));
                names.push(name.clone());
            }
        }
        if let Some(timeout) = &block.timeout {
            let index = timeout_specs.len();
            let after = &timeout.after;
            let has_handler = timeout.body.is_some();
            let targets = timeout.body.as_ref().and_then(|b| b.targets.clone());
            let spec_targets = declared(&targets, &mut target_checks);
            timeout_specs.push(quote_spanned! {after.span()=>
                ::troupe::fsm::TimeoutSpec { state: #name, after: #after, has_handler: #has_handler, targets: #spec_targets }
            });
            timeout_index_arms.push(quote!(#sp => ::core::option::Option::Some(#index),));
            if let Some(body) = &timeout.body {
                let ident = format_ident!("__troupe_timeout_{}", index);
                prelude.push(bind_handler(&ident, &body.handler, &ctx_generics, false));
                let call = dispatch_call(&ident, &body.handler, quote!(__s, __c));
                timeout_handler_arms.push(quote!(#sp => #call,));
            }
        }
    }

    let has_unhandled = unhandled.is_some();
    // The `unhandled` hook is the last fallback of dispatch itself, so the
    // machine makes one call (and awaits at most one future) per event.
    let unhandled_targets = match &unhandled {
        Some(body) => declared(&body.targets, &mut target_checks),
        None => quote!(::core::option::Option::None),
    };
    let unhandled_call = match &unhandled {
        Some(body) => {
            let ident = format_ident!("__troupe_unhandled");
            prelude.push(bind_handler(&ident, &body.handler, &generics, true));
            dispatch_call(&ident, &body.handler, quote!(__s, __e, __c))
        }
        None => quote!(#rt::Dispatched::Unhandled),
    };
    for terminal in &terminals {
        let terminal = pat(terminal);
        target_checks.push(quote!(#terminal => {}));
    }
    let terminal_names = terminals.iter().map(variant_name);
    let initial_name = match initial_variant(&initial) {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    };

    let none = quote!(::core::option::Option::None);
    let empty = quote!(::std::vec::Vec::new());
    let dispatch_body = match_or(
        quote!((__s, __e)),
        &specific_arms,
        match_or(quote!(__e), &any_arms, unhandled_call),
    );
    let targets_body = match_or(
        quote!((__s, __e)),
        &specific_target_arms,
        match_or(quote!(__e), &any_target_arms, unhandled_targets.clone()),
    );
    let entry_body = match_or(quote!(__s), &entry_arms, empty.clone());
    let exit_body = match_or(quote!(__s), &exit_arms, empty);
    let timeout_index_body = match_or(quote!(__s), &timeout_index_arms, none.clone());
    let timeout_handler_body = match_or(
        quote!(__s),
        &timeout_handler_arms,
        quote!(#rt::Dispatched::Unhandled),
    );
    let state_type = quote!(#state_ty).to_string();
    let event_type = quote!(#event_ty).to_string();

    quote! {{
        static __TROUPE_FSM_TABLE: ::troupe::fsm::FsmTable = ::troupe::fsm::FsmTable {
            state_type: #state_type,
            event_type: #event_type,
            states: &[ #( #state_names ),* ],
            events: &[ #( #event_names ),* ],
            handlers: &[ #( #handler_specs ),* ],
            entry_hooks: &[ #( #entry_names ),* ],
            exit_hooks: &[ #( #exit_names ),* ],
            timeouts: &[ #( #timeout_specs ),* ],
            has_unhandled_hook: #has_unhandled,
            unhandled_targets: #unhandled_targets,
            initial: #initial_name,
            terminals: &[ #( #terminal_names ),* ],
            all_states: <#state_ty as ::troupe::fsm::StateVariant>::VARIANTS,
            all_events: <#event_ty as ::troupe::fsm::EventVariant>::VARIANTS,
        };
        let __troupe_initial: #state_ty = #initial;
        #( #prelude )*
        // Never called: makes the compiler check every declared state and target path.
        #[allow(unreachable_patterns)]
        let _ = |__s: &#state_ty| match __s { #( #target_checks )* _ => {} };
        #rt::machine::<#generics, _, _, _, _, _, _>(
            __troupe_initial,
            &__TROUPE_FSM_TABLE,
            move |__s, __e, __c, __run_async| { #dispatch_body },
            |__s, __e| -> ::core::option::Option<&'static [&'static str]> { #targets_body },
            move |__s, __c| { #entry_body },
            move |__s, __c| { #exit_body },
            |__s| { #timeout_index_body },
            move |__s, __c, __run_async| { #timeout_handler_body },
        )
    }}
}

/// `match scrutinee { arms.. _ => fallback }`, or just `fallback` (with the
/// closure parameters marked used) when there are no arms.
fn match_or(scrutinee: TokenStream, arms: &[TokenStream], fallback: TokenStream) -> TokenStream {
    if arms.is_empty() {
        return fallback;
    }
    quote! {{
        #[allow(unreachable_patterns)]
        let __troupe_r = match #scrutinee {
            #( #arms )*
            _ => #fallback,
        };
        __troupe_r
    }}
}

/// `let ident = <helper>(handler);`: the helper gives the closure its
/// signature (async: returns a `HandlerFuture`; `sync`: returns anything
/// `IntoHandlerResult`), spanned on the handler so a wrong one is reported there.
fn bind_handler(
    ident: &syn::Ident,
    handler: &Handler,
    generics: &TokenStream,
    takes_event: bool,
) -> TokenStream {
    let expr = &handler.expr;
    // The helper's tokens carry the handler's span, so an unmet bound on the
    // closure (a wrong return type) is reported at the handler.
    let span = expr.span();
    let rt = quote_spanned!(span=> ::troupe::fsm::generated);
    let helper = match (handler.sync, takes_event) {
        (false, true) => quote_spanned!(span=> #rt::handler::<#generics, _>),
        (false, false) => quote_spanned!(span=> #rt::timeout_handler::<#generics, _>),
        (true, true) => quote_spanned!(span=> #rt::sync_handler::<#generics, _, _>),
        (true, false) => quote_spanned!(span=> #rt::sync_timeout_handler::<#generics, _, _>),
    };
    quote_spanned! {span=>
        let #ident = #helper(#expr);
    }
}

/// The dispatch arm's value for a handler: a sync one runs at once; an
/// async one makes its future only when dispatch may run async handlers.
fn dispatch_call(ident: &syn::Ident, handler: &Handler, args: TokenStream) -> TokenStream {
    let rt = quote!(::troupe::fsm::generated);
    if handler.sync {
        quote!(#rt::now(#ident(#args)))
    } else {
        quote! {
            if __run_async {
                #rt::Dispatched::Later(#ident(#args))
            } else {
                #rt::Dispatched::Deferred
            }
        }
    }
}

/// The table's value for declared targets; has the compiler check each path.
fn declared(targets: &Option<Vec<syn::Path>>, checks: &mut Vec<TokenStream>) -> TokenStream {
    match targets {
        Some(targets) => {
            let names = targets.iter().map(variant_name);
            let pats: Vec<TokenStream> = targets
                .iter()
                .map(|p| quote_spanned!(p.span()=> #p { .. }))
                .collect();
            if !pats.is_empty() {
                checks.push(quote!(#( #pats )|* => {}));
            }
            quote!(::core::option::Option::Some(&[ #( #names ),* ] as &'static [&'static str]))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// The variant name of an `initial:` expression that is a path to a
/// variant (`S::Idle`, `S::Busy { .. }`, `S::Failed(..)`), else `None`.
fn initial_variant(expr: &syn::Expr) -> Option<String> {
    let path = match expr {
        syn::Expr::Group(group) => return initial_variant(&group.expr),
        syn::Expr::Paren(paren) => return initial_variant(&paren.expr),
        syn::Expr::Path(p) if p.qself.is_none() && p.path.segments.len() >= 2 => &p.path,
        syn::Expr::Call(call) => match &*call.func {
            syn::Expr::Path(p) if p.qself.is_none() && p.path.segments.len() >= 2 => &p.path,
            _ => return None,
        },
        syn::Expr::Struct(s) if s.qself.is_none() => &s.path,
        _ => return None,
    };
    let name = variant_name(path);
    name.starts_with(|c: char| c.is_uppercase()).then_some(name)
}
