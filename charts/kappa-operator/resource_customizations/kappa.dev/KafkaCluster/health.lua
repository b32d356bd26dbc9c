-- Argo CD health of a Kappa Operator KafkaCluster: Healthy while a broker
-- answers (a broker away is said in the message), Degraded when the settings
-- cannot work without a change (a missing Secret, refused credentials),
-- Progressing while the brokers do not answer.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the KafkaCluster" }
local st = obj.status
if st == nil or st.observedGeneration ~= obj.metadata.generation then
  return hs
end
local conditions = {}
for _, c in ipairs(st.conditions or {}) do
  conditions[c.type] = c
end
local stalled, ready, degraded = conditions["Stalled"], conditions["Ready"], conditions["Degraded"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  if degraded ~= nil and degraded.status == "True" then
    hs.message = hs.message .. "; " .. (degraded.message or "")
  end
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
