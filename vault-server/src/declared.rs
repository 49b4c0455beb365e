//! Values whose rule the core checks, with the rule declared in the spec: the core's errors
//! name the field (`role: must be one of user, admin`), and the document says the same.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

/// The values a [`OneOf`] may take.
pub trait Choices: Send + Sync + 'static {
    fn values() -> Vec<&'static str>;
}

/// A string declared as one of `C::values()`; any string is taken here and the core
/// refuses the others.
pub struct OneOf<C>(String, PhantomData<C>);

impl<C> OneOf<C> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<C> From<String> for OneOf<C> {
    fn from(value: String) -> Self {
        OneOf(value, PhantomData)
    }
}

impl<C> From<OneOf<C>> for String {
    fn from(value: OneOf<C>) -> Self {
        value.0
    }
}

impl<'de, C> serde::Deserialize<'de> for OneOf<C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|value| OneOf(value, PhantomData))
    }
}

impl<C: Choices> Type for OneOf<C> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        schema.enum_items = C::values().into_iter().map(Value::from).collect();
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<C: Choices> ToJSON for OneOf<C> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0.as_str()))
    }
}

impl<C: Choices> ParseFromJSON for OneOf<C> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(value)) => Ok(OneOf(value, PhantomData)),
            _ => Err(ParseError::expected_type(value.unwrap_or_default())),
        }
    }
}

impl<C: Choices> ParseFromParameter for OneOf<C> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(OneOf(value.into(), PhantomData))
    }
}

/// Names a set of choices by the core's list of them.
macro_rules! choices {
    ($($marker:ident => $values:expr;)*) => {$(
        pub struct $marker;

        impl Choices for $marker {
            fn values() -> Vec<&'static str> {
                $values.into_iter().collect()
            }
        }
    )*};
}

choices! {
    Scopes => vault_core::keys::Scope::ALL.map(vault_core::keys::Scope::as_str);
    Roles => vault_core::users::Role::ALL.map(vault_core::users::Role::as_str);
    JobStatuses => vault_core::training::JobStatus::ALL.map(vault_core::training::JobStatus::as_str);
    Ranges => vault_core::insights::Range::ALL.map(vault_core::insights::Range::as_str);
    IpModes => vault_core::settings::IP_MODES.iter().copied();
    MessageRoles => vault_core::conversations::ROLES.iter().copied();
    TlsModes => vault_core::certificate::TLS_MODES.iter().copied();
    ServiceNames => vault_core::services::SERVICES.iter().map(|s| s.name);
    // This gateway's own log first (the default), then every managed service's journal.
    LogServices => std::iter::once(vault_core::logs::VAULT_SERVICE).chain(
        vault_core::services::SERVICES.iter().map(|s| s.name).filter(|name| *name != vault_core::logs::VAULT_SERVICE),
    );
    LogLevels => vault_core::logs::LEVELS;
    AuditExportFormats => vault_core::audit::ExportFormat::ALL.map(vault_core::audit::ExportFormat::as_str);
    ConversationExportFormats =>
        vault_core::conversations::ExportFormat::ALL.map(vault_core::conversations::ExportFormat::as_str);
}

/// A page's `limit`, declared as 1 to `MAX`; any whole number is taken here and the core
/// refuses those out of range.
pub struct Limit<const MAX: u32>(pub u32);

impl<const MAX: u32> Type for Limit<MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "integer_uint32".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new_with_format("integer", "uint32");
        schema.minimum = Some(1.0);
        schema.maximum = Some(f64::from(MAX));
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<const MAX: u32> ParseFromParameter for Limit<MAX> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map(Limit).map_err(|_| ParseError::custom("must be a whole number"))
    }
}
