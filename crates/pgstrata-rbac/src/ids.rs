//! rbac's keys and states: the typed ids of grants and of the principals a tenant's grants
//! name, and the text states of its CHECK-listed columns. `MODULE.column_types` lists them,
//! so the generated rows carry them.

pgstrata_core::uuid_id!(
    /// The id of a grant (`rbac.grants.id`): what [`revoke`](crate::admin::revoke) takes.
    GrantId,
    "grant id"
);

pgstrata_core::uuid_id!(
    /// The id of a group (`rbac.group_members.group_id`, and a grant's `principal_id` when its
    /// principal is a group). Groups have no table: a group exists while it has members or
    /// grants, under the id the application chose for it.
    GroupId,
    "group id"
);

pgstrata_core::uuid_id!(
    /// The id of an API key, as the application that issues keys stores it (rbac keeps no keys,
    /// only their grants).
    ApiKeyId,
    "API key id"
);

pgstrata_core::uuid_id!(
    /// The id of a service principal (a backend process acting on its own behalf), as the
    /// application names it.
    ServiceId,
    "service id"
);

pgstrata_core::text_enum!(
    /// What kind of principal holds grants (`principal_type`). Groups hold users, API keys and
    /// services, never other groups.
    PrincipalType, "principal type" {
        User = "user",
        ApiKey = "api_key",
        Group = "group",
        Service = "service",
    }
);

pgstrata_core::text_enum!(
    /// Allow or deny (`effect` of grants and role permissions). A matching deny always wins.
    Effect, "effect" {
        Allow = "allow",
        Deny = "deny",
    }
);
