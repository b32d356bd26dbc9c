-- Argo CD health of a Kappa Operator ViewVersion (one version of a
-- Processor's logic and its view): Healthy once its view has caught up
-- (CaughtUp, Active, Standby), Progressing while it replays or is verified,
-- Degraded once Failed.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the ViewVersion" }
local st = obj.status
if st == nil or st.observedGeneration ~= obj.metadata.generation then
  return hs
end
local conditions = {}
for _, c in ipairs(st.conditions or {}) do
  conditions[c.type] = c
end
local stalled, reconciling, ready = conditions["Stalled"], conditions["Reconciling"], conditions["Ready"]
local phase = st.phase or "Pending"
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. (stalled.message or "")
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = phase .. ": " .. (reconciling.message or "")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. (ready.message or "")
end
return hs
