-- Argo CD health of a Kappa Operator Processor. Healthy only when the
-- version the spec asks for serves readers; a version waiting for a manual
-- promotion is Suspended (a person's turn, as for a paused rollout).
-- Runs in Argo CD's sandbox without the string library.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the Processor" }
local st = obj.status
if st == nil or st.observedGeneration ~= obj.metadata.generation then
  return hs
end
local conditions = {}
for _, c in ipairs(st.conditions or {}) do
  conditions[c.type] = c
end
local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end
local stalled, reconciling, ready = conditions["Stalled"], conditions["Reconciling"], conditions["Ready"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
elseif st.phase == "AwaitingPromotion" then
  hs.status = "Suspended"
  hs.message = said(reconciling or ready)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = said(reconciling)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready)
elseif ready ~= nil then
  hs.message = said(ready)
end
return hs
