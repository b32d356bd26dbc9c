-- Promote the version that waits for a manual promotion: writes its id to
-- spec.rollout.promote.
local st = obj.status or {}
if st.phase ~= "AwaitingPromotion" or st.candidateVersion == nil then
  error("no version awaits promotion (phase " .. tostring(st.phase) .. ")")
end
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.promote = st.candidateVersion
return obj
