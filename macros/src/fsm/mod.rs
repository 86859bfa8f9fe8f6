//! The `fsm!` macro: parse, check, expand.

mod expand;
mod parse;

use proc_macro2::TokenStream;

/// Expands one `fsm!` invocation.
pub fn fsm(input: TokenStream) -> syn::Result<TokenStream> {
    let parsed: parse::FsmInput = syn::parse2(input)?;
    Ok(expand::expand(parsed))
}
