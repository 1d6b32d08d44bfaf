//! The tenancy module's keys and states. Tenants and users are keyed by core's
//! [`TenantId`](pgstrata_core::TenantId) and [`UserId`](pgstrata_core::UserId), which every
//! module shares; the keys and states below belong to this module. `MODULE.column_types` lists
//! each, so the generated rows carry them.

pgstrata_core::uuid_id!(
    /// The id of a membership (`tenancy.memberships.id`).
    MembershipId,
    "membership id"
);

pgstrata_core::uuid_id!(
    /// The id of an invitation (`tenancy.invitations.id`).
    InvitationId,
    "invitation id"
);

pgstrata_core::text_enum!(
    /// Lifecycle state of a tenant (`tenancy.tenants.status`). The operator changes it; a
    /// suspended tenant reads but writes nothing.
    TenantStatus, "tenant status" {
        Active = "active",
        Suspended = "suspended",
    }
);

pgstrata_core::text_enum!(
    /// State of an invitation (`tenancy.invitations.status`). Only `pending` may be accepted or
    /// revoked; the database refuses every other move.
    InvitationStatus, "invitation status" {
        Pending = "pending",
        Accepted = "accepted",
        Revoked = "revoked",
        Expired = "expired",
    }
);
