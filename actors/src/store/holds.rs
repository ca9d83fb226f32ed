use super::Store;
use crate::domain::inflight::HoldState;
use crate::entity::inflight_hold;
use crate::LedgerError;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

impl Store {
    /// The holds named by `id`: the hold itself, or every hold under a parent (a queued
    /// transaction, a split, a bulk batch).
    pub async fn holds_for(&self, id: &str) -> Result<Vec<inflight_hold::Model>, LedgerError> {
        let id = id.to_owned();
        self.run(|db| async move {
            Ok(inflight_hold::Entity::find()
                .filter(
                    Condition::any()
                        .add(inflight_hold::Column::HoldId.eq(id.clone()))
                        .add(inflight_hold::Column::ParentId.eq(id.clone()))
                        .add(inflight_hold::Column::GrandparentId.eq(id)),
                )
                .order_by_asc(inflight_hold::Column::CreatedAt)
                .limit(10_000)
                .all(&db)
                .await?)
        })
        .await
    }

    pub async fn hold(&self, hold_id: &str) -> Result<Option<inflight_hold::Model>, LedgerError> {
        let id = hold_id.to_owned();
        self.run(|db| async move { Ok(inflight_hold::Entity::find_by_id(id).one(&db).await?) })
            .await
    }

    /// Marks an open hold as having a queued action; `false` if it is not open or already
    /// has one. The condition is checked by the database, so two processes cannot both win.
    pub async fn mark_hold_pending(
        &self,
        hold_id: &str,
        action: &str,
    ) -> Result<bool, LedgerError> {
        let (id, action) = (hold_id.to_owned(), action.to_owned());
        self.run(|db| async move {
            let result = inflight_hold::Entity::update_many()
                .col_expr(inflight_hold::Column::PendingAction, Expr::val(action))
                .filter(inflight_hold::Column::HoldId.eq(id))
                .filter(inflight_hold::Column::PendingAction.is_null())
                .filter(inflight_hold::Column::State.eq(HoldState::Inflight.as_str()))
                .exec(&db)
                .await?;
            Ok(result.rows_affected == 1)
        })
        .await
    }

    /// Takes back a pending mark, only if it is still this exact action.
    pub async fn unmark_hold_pending(
        &self,
        hold_id: &str,
        action: &str,
    ) -> Result<(), LedgerError> {
        let (id, action) = (hold_id.to_owned(), action.to_owned());
        self.run(|db| async move {
            inflight_hold::Entity::update_many()
                .col_expr(
                    inflight_hold::Column::PendingAction,
                    Expr::val(Option::<String>::None),
                )
                .filter(inflight_hold::Column::HoldId.eq(id))
                .filter(inflight_hold::Column::PendingAction.eq(action))
                .exec(&db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Open holds without a pending action whose expiry or auto-commit time has come.
    pub async fn due_holds(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<inflight_hold::Model>, LedgerError> {
        self.run(move |db| async move {
            Ok(inflight_hold::Entity::find()
                .filter(inflight_hold::Column::State.eq(HoldState::Inflight.as_str()))
                .filter(inflight_hold::Column::PendingAction.is_null())
                .filter(
                    Condition::any()
                        .add(inflight_hold::Column::ExpiresAt.lte(now))
                        .add(inflight_hold::Column::CommitAt.lte(now)),
                )
                .limit(limit)
                .all(&db)
                .await?)
        })
        .await
    }

    pub async fn pending_holds(
        &self,
        limit: u64,
    ) -> Result<Vec<inflight_hold::Model>, LedgerError> {
        self.run(move |db| async move {
            Ok(inflight_hold::Entity::find()
                .filter(Expr::col(inflight_hold::Column::PendingAction).is_not_null())
                .limit(limit)
                .all(&db)
                .await?)
        })
        .await
    }
}
