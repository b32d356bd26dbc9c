-- Actions Argo CD offers for a Processor.
local st = obj.status or {}
local actions = {}
actions["promote"] = { disabled = not (st.phase == "AwaitingPromotion" and st.candidateVersion ~= nil) }
actions["rollback"] = { disabled = st.rollback == nil }
actions["reprocess"] = {}
return actions
