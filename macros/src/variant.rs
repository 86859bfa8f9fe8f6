//! `#[derive(StateVariant)]` and `#[derive(EventVariant)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Ident};

/// Implements `::troupe::fsm::<trait_name>` for an enum: `VARIANTS` and a
/// `variant_name` that matches every variant with `{ .. }`.
pub fn derive(input: DeriveInput, trait_name: &str) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            format!(
                "`{trait_name}` can only be derived for enums (one variant per state or event)"
            ),
        ));
    };
    let name = &input.ident;
    let trait_ident = Ident::new(trait_name, proc_macro2::Span::call_site());
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let idents: Vec<&Ident> = data.variants.iter().map(|v| &v.ident).collect();
    let names: Vec<String> = idents.iter().map(|i| i.to_string()).collect();
    let body = if idents.is_empty() {
        quote! { match *self {} }
    } else {
        quote! { match self { #( Self::#idents { .. } => #names, )* } }
    };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::troupe::fsm::#trait_ident for #name #ty_generics #where_clause {
            const VARIANTS: &'static [&'static str] = &[ #( #names ),* ];
            #[inline]
            fn variant_name(&self) -> &'static str {
                #body
            }
        }
    })
}
