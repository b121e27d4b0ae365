//! `GET /v1/admin/cluster` (API.md §10): the members, their leases, and each shard's owner
//! and epoch, as this node's last cluster round saw them. 404 outside cluster mode.

use crate::http::admin::check_admin;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBody {
    pub nodes: Vec<NodeBody>,
    pub shards: Vec<ShardBody>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBody {
    pub node_id: String,
    pub url: String,
    /// When the node's lease runs out unless renewed, in the service's time zone.
    pub lease_expires_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardBody {
    /// `queue`, `schedule:<id>` or `wallets:<bucket>`.
    pub shard: String,
    /// The live owner; `null` when released or its owner is gone.
    pub owner: Option<String>,
    pub epoch: u64,
}

#[utoipa::path(get, path = "/v1/admin/cluster", tag = "admin",
    params(("X-Admin-Key" = String, Header, description = "the admin key")),
    responses(
        (status = 200, body = ClusterBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "not in cluster mode", body = ErrorBody),
    ))]
pub async fn cluster(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_admin(&state, &req)?;
    let membership = state.cluster.as_ref().ok_or(ApiError::NotFound)?;
    let view = membership.view();
    Ok(HttpResponse::Ok().json(ClusterBody {
        nodes: view
            .nodes
            .iter()
            .map(|n| NodeBody {
                node_id: n.node_id.clone(),
                url: n.url.clone(),
                lease_expires_at: state.time(n.lease_expires_at),
            })
            .collect(),
        shards: view
            .shards
            .iter()
            .map(|s| ShardBody {
                shard: s.shard.clone(),
                owner: s.owner.clone(),
                epoch: s.epoch,
            })
            .collect(),
    }))
}
