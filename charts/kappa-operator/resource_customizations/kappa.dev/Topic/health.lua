-- Argo CD health of a Kappa Operator Topic: Healthy when the Kafka topic
-- matches the spec, Degraded when it cannot without a change (Stalled),
-- Suspended while reconciliation is paused by annotation, Progressing
-- otherwise.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the Topic" }
local st = obj.status
if obj.metadata.annotations ~= nil and obj.metadata.annotations["kappa.dev/reconcile"] == "paused" then
  hs.status = "Suspended"
  hs.message = "reconciliation paused (annotation kappa.dev/reconcile: paused)"
  return hs
end
if st == nil or st.observedGeneration ~= obj.metadata.generation then
  return hs
end
for _, c in ipairs(st.conditions or {}) do
  if c.type == "Stalled" and c.status == "True" then
    return { status = "Degraded", message = c.reason .. ": " .. (c.message or "") }
  end
end
for _, c in ipairs(st.conditions or {}) do
  if c.type == "Reconciling" and c.status == "True" then
    hs.message = c.reason .. ": " .. (c.message or "")
    return hs
  end
end
for _, c in ipairs(st.conditions or {}) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    end
    hs.message = c.message or c.reason
  end
end
return hs
