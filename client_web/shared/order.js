// Keeping a thread's list in seq order, shared by the patient page and the staff console.
// Stored messages carry `data-seq`; items still without one (sends not yet acknowledged)
// stay after every stored message.

// Puts `li` into `list` before the first item with a higher seq or still without one;
// returns whether that is the end of the stored messages.
export function placeBySeq(list, li, seq) {
  const last = list.lastElementChild;
  if (last && last !== li && last.dataset.seq && Number(last.dataset.seq) < seq) {
    list.append(li); // the usual case: the newest so far, nothing pending
    return true;
  }
  let before = null;
  for (const other of list.children) {
    if (other === li) continue;
    if (!other.dataset.seq || Number(other.dataset.seq) > seq) {
      before = other;
      break;
    }
  }
  if (before === null) {
    if (li.parentNode !== list || li !== list.lastElementChild) list.append(li);
    return true;
  }
  if (li.nextElementSibling !== before) list.insertBefore(li, before);
  return !before.dataset.seq;
}
