//! Calls answered without blocking: FPE tokenize and detokenize on the caller's own thread.
//!
//! An FPE call is a few microseconds of AES and touches no storage, so a daemon need not hand
//! it to a blocking thread (that hand-off cost more CPU than the call). Two things could still
//! block it: the key state's lock, which a key change (rotation, unseal, a key reload) holds
//! across storage I/O, and the periodic key-table check, which reads the store. These methods
//! therefore answer only when neither is in the way, and otherwise return `None` having done
//! nothing, so that the caller runs the blocking method instead (which waits, reloads keys,
//! and gives the same answer).

use super::*;

impl Vault {
    /// [`Vault::tokenize_batch_as`] for an FPE template, if it can be answered at once: no key
    /// refresh due and the key state not held by a key change. `None`: nothing was done; call
    /// the blocking method. (FPE templates take no idempotency keys, so the caller does not
    /// matter.)
    pub fn try_tokenize_now(
        &self,
        template: &str,
        items: &[TokenizeItem<'_>],
    ) -> Option<Result<Batch<Tokenized>, Error>> {
        let cfg = self.fpe_template_now(template, items.len())?;
        let state = self.state.try_read().ok()?;
        let Some(u) = state.as_ref() else {
            return Some(Err(Error::Sealed));
        };
        Some(self.fpe_tokenize(u, cfg, items))
    }

    /// [`Vault::detokenize_batch`] for an FPE template, if it can be answered at once and every
    /// token decrypts. Any failure, call-level or per token, returns `None`: the blocking
    /// method then reloads the keys first (the token may name a version made by another
    /// process), as it does for every failed item.
    pub fn try_detokenize_now(
        &self,
        template: &str,
        tokens: &[&str],
        key_version: Option<u32>,
    ) -> Option<Batch<Detokenized>> {
        let cfg = self.fpe_template_now(template, tokens.len())?;
        let state = self.state.try_read().ok()?;
        let u = state.as_ref()?;
        let results = self.fpe_detokenize(u, cfg, tokens, key_version).ok()?;
        results.iter().all(Result::is_ok).then_some(results)
    }

    /// The template, if it is an FPE template, the batch size is allowed, and no key-table
    /// check is due (that check reads the store).
    fn fpe_template_now(&self, template: &str, len: usize) -> Option<&TemplateConfig> {
        check_batch(len).ok()?;
        let cfg = self.template(template).ok()?;
        (matches!(cfg.mode, Mode::Fpe) && !self.refresh_due()).then_some(cfg)
    }
}
