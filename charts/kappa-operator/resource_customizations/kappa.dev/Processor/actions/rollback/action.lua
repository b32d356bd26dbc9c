-- Roll back to the newest retained standby, without a replay: writes the
-- spec fields that select it (status.rollback) into the spec, and, with
-- manual promotion, promotes it.
local target = (obj.status or {}).rollback
if target == nil then
  error("no retained standby to roll back to (see spec.rollout.retainVersions)")
end
obj.spec.template.image = target.template.image
obj.spec.template.command = target.template.command
obj.spec.template.args = target.template.args
obj.spec.template.env = target.template.env
obj.spec.inputs = target.inputs
obj.spec.view = target.view
obj.spec.reprocessNonce = target.reprocessNonce
if obj.spec.version ~= nil then
  obj.spec.version = target.version
end
-- Asking for the rollback is the promotion.
if obj.spec.rollout ~= nil and obj.spec.rollout.promotion == "Manual" then
  obj.spec.rollout.promote = target.version
end
return obj
