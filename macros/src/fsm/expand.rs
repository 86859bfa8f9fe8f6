//! Code generation for `fsm!`: a `'static` table and one closure per kind of
//! clause, each a `match` on variants, handed to `::troupe::fsm::generated::machine`.
//!
//! Every pattern is the user's path followed by `{ .. }` and keeps the user's
//! span, so the compiler itself checks that each state and event names a
//! variant of the declared enum and points at the path when it does not.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{FsmInput, variant_name};

pub fn expand(input: FsmInput) -> TokenStream {
    let FsmInput {
        state_ty,
        event_ty,
        context_ty,
        action_ty,
        initial,
        blocks,
        unhandled,
    } = input;
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
            let handler = &on.handler;
            prelude.push(quote_spanned! {handler.span()=>
                let #handler_ident = #rt::handler::<#generics, _>(#handler);
            });
            let spec_state = match &state_name {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            let spec_targets = match &on.targets {
                Some(targets) => {
                    let names = targets.iter().map(variant_name);
                    let pats = targets.iter().map(pat);
                    target_checks.push(quote!(#( #pats )|* => {}));
                    quote!(::core::option::Option::Some(&[ #( #names ),* ] as &'static [&'static str]))
                }
                None => quote!(::core::option::Option::None),
            };
            let call = quote!(::core::option::Option::Some(#handler_ident(__s, __e, __c)));
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
            handler_specs.push(quote! {
                ::troupe::fsm::HandlerSpec { state: #spec_state, event: #event_name, targets: #spec_targets }
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
            let has_handler = timeout.handler.is_some();
            timeout_specs.push(quote_spanned! {after.span()=>
                ::troupe::fsm::TimeoutSpec { state: #name, after: #after, has_handler: #has_handler }
            });
            timeout_index_arms.push(quote!(#sp => ::core::option::Option::Some(#index),));
            if let Some(handler) = &timeout.handler {
                let ident = format_ident!("__troupe_timeout_{}", index);
                prelude.push(quote_spanned! {handler.span()=>
                    let #ident = #rt::timeout_handler::<#ctx_generics, _>(#handler);
                });
                timeout_handler_arms
                    .push(quote!(#sp => ::core::option::Option::Some(#ident(__s, __c)),));
            }
        }
    }

    let has_unhandled = unhandled.is_some();
    // The `unhandled` hook is the last fallback of dispatch itself, so the
    // machine makes one call (and awaits one future) per event.
    let unhandled_call = match &unhandled {
        Some(hook) => {
            prelude.push(quote_spanned! {hook.span()=>
                let __troupe_unhandled = #rt::handler::<#generics, _>(#hook);
            });
            quote!(::core::option::Option::Some(__troupe_unhandled(
                __s, __e, __c
            )))
        }
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
        match_or(quote!(__e), &any_target_arms, none.clone()),
    );
    let entry_body = match_or(quote!(__s), &entry_arms, empty.clone());
    let exit_body = match_or(quote!(__s), &exit_arms, empty);
    let timeout_index_body = match_or(quote!(__s), &timeout_index_arms, none.clone());
    let timeout_handler_body = match_or(quote!(__s), &timeout_handler_arms, none);
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
        };
        let __troupe_initial: #state_ty = #initial;
        #( #prelude )*
        // Never called: makes the compiler check every declared state and target path.
        #[allow(unreachable_patterns)]
        let _ = |__s: &#state_ty| match __s { #( #target_checks )* _ => {} };
        #rt::machine::<#generics, _, _, _, _, _, _>(
            __troupe_initial,
            &__TROUPE_FSM_TABLE,
            move |__s, __e, __c| { #dispatch_body },
            |__s, __e| -> ::core::option::Option<&'static [&'static str]> { #targets_body },
            move |__s, __c| { #entry_body },
            move |__s, __c| { #exit_body },
            |__s| { #timeout_index_body },
            move |__s, __c| { #timeout_handler_body },
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
