//! Derive macros for the troupe runtime.
//!
//! `#[derive(RemoteMessage)]` gives a serde type its wire form: an implementation of
//! `ractor::Message` whose serialisation goes through `troupe_runtime::codec`, which encodes
//! with MessagePack (named fields) and decodes without ever panicking on foreign bytes.
//! The type must also derive `serde::Serialize` and `serde::Deserialize`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{DeriveInput, parse_macro_input};

/// Makes a serde type a message that can cross nodes.
///
/// ```ignore
/// #[derive(Serialize, Deserialize, RemoteMessage)]
/// enum EchoMsg {
///     Echo { text: String, reply: troupe_runtime::Reply<String> },
/// }
/// ```
#[proc_macro_derive(RemoteMessage)]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        impl #impl_generics ::troupe_runtime::ractor::Message for #name #ty_generics #where_clause {
            fn serializable() -> bool {
                true
            }

            fn serialize(
                self,
            ) -> ::core::result::Result<::troupe_runtime::ractor::message::SerializedMessage, ::troupe_runtime::ractor::message::BoxedDowncastErr> {
                ::troupe_runtime::codec::encode_message(&self)
            }

            fn deserialize(
                bytes: ::troupe_runtime::ractor::message::SerializedMessage,
            ) -> ::core::result::Result<Self, ::troupe_runtime::ractor::message::BoxedDowncastErr> {
                ::troupe_runtime::codec::decode_message(bytes)
            }
        }
    }
    .into()
}
