//! The policy in force, reloadable (SIGHUP) without dropping calls, and the offline check.

use super::*;

/// Validate a policy file without loading it into a server (`vaultctl policy check`).
pub fn check(path: &Path, templates: &[TemplateInfo]) -> Result<Vec<Warning>, PolicyError> {
    Policy::load(path, templates).map(|(_, warnings)| warnings)
}

/// The policy in force, reloadable without restart, plus the quota buckets and the clock.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    templates: RwLock<Vec<TemplateInfo>>,
    current: RwLock<Arc<Policy>>,
    quotas: Quotas,
    clock: Arc<dyn Clock>,
}

impl PolicyStore {
    /// Load the policy at `path`. Returns the load warnings for the server to log.
    pub fn open(
        path: impl Into<PathBuf>,
        templates: Vec<TemplateInfo>,
    ) -> Result<(Self, Vec<Warning>), PolicyError> {
        PolicyStore::with_clock(path, templates, Arc::new(SystemClock))
    }

    /// [`PolicyStore::open`] with a given clock (tests).
    pub fn with_clock(
        path: impl Into<PathBuf>,
        templates: Vec<TemplateInfo>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Vec<Warning>), PolicyError> {
        let path = path.into();
        let (policy, warnings) = Policy::load(&path, &templates)?;
        let store = PolicyStore {
            path,
            templates: RwLock::new(templates),
            current: RwLock::new(Arc::new(policy)),
            quotas: Quotas::default(),
            clock,
        };
        Ok((store, warnings))
    }

    /// Re-read the file. The new policy replaces the old only if it loads completely; on error
    /// the old one stays in force.
    pub fn reload(&self) -> Result<Vec<Warning>, PolicyError> {
        let templates = self
            .templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (policy, warnings) = Policy::load(&self.path, &templates)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        Ok(warnings)
    }

    /// Replace the template descriptions (after a template is created or changed) and reload.
    pub fn set_templates(&self, templates: Vec<TemplateInfo>) -> Result<Vec<Warning>, PolicyError> {
        let (policy, warnings) = Policy::load(&self.path, &templates)?;
        *self.templates.write().unwrap_or_else(|e| e.into_inner()) = templates;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        Ok(warnings)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        // A poisoned lock still holds a complete `Arc<Policy>` (assignment is the only write).
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Decide a request. Charges the quota of the grant that allows it.
    pub fn authorize(
        &self,
        caller: &str,
        scope: &Scope,
        ctx: &Context<'_>,
    ) -> Result<Grant, Denied> {
        self.policy()
            .authorize(caller, None, scope, ctx, &self.quotas, self.clock.as_ref())
    }

    /// [`PolicyStore::authorize`] for a caller of the registry: its roles and scopes are
    /// considered together with the policy file's entry for the same identity (if any).
    pub fn authorize_registered(
        &self,
        caller: &str,
        registered: Registered<'_>,
        scope: &Scope,
        ctx: &Context<'_>,
    ) -> Result<Grant, Denied> {
        self.policy().authorize(
            caller,
            Some(registered),
            scope,
            ctx,
            &self.quotas,
            self.clock.as_ref(),
        )
    }

    /// [`Policy::explain`] on the policy in force.
    pub fn explain(&self, caller: &str, scope: &Scope) -> Explanation {
        self.policy().explain(caller, scope)
    }
}
