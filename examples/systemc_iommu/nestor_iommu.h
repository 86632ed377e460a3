// A SystemC TLM-2.0 IOMMU around nestor: devices talk to its target sockets in IOVAs, it
// translates through nestor and forwards to memory in host-physical addresses.
//
//   device --(IOVA, IommuExtension)--> [NestorIommu] --(HPA)--> memory
//
// * Requester identity (source-id, PASID, privilege) and the PCIe ATS type travel in one
//   generic-payload extension, IommuExtension; a transaction without it is refused.
// * Faults become TLM error responses: a missing/invalid structure entry is
//   TLM_GENERIC_ERROR_RESPONSE, an unmapped or out-of-range address TLM_ADDRESS_ERROR_RESPONSE,
//   a permission violation TLM_COMMAND_ERROR_RESPONSE. The VT-d reason goes back in the
//   extension; nestor's fault log keeps the record for the embedder's fault reporting.
// * DMI is granted one IOVA page at a time (a contiguous IOVA range need not be contiguous in
//   memory) and only for access the translation allows. Every grant is remembered; invalidate()
//   - the only way structures or page-table changes reach the IOMMU - revokes with
//   invalidate_direct_mem_ptr every grant the operation may cover (over-revocation is allowed,
//   as over-invalidation is; under-revocation would let a device bypass the new mapping).
//   Memory revoking its own DMI revokes the device grants built on it.
#pragma once

#include <nestor.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <systemc>
#include <tlm>
#include <tlm_utils/multi_passthrough_target_socket.h>
#include <tlm_utils/simple_initiator_socket.h>

namespace nestor_tlm {

enum class AtsType : uint8_t {
  kUntranslated,        // a normal DMA: the IOMMU translates
  kTranslationRequest,  // ATS TR: translate only, the answer goes back in the extension
  kTranslated,          // ATS translated request: the address is already host-physical
};

struct IommuExtension : tlm::tlm_extension<IommuExtension> {
  uint16_t source_id = 0;
  bool has_pasid = false;
  uint32_t pasid = 0;
  bool privileged = false;
  bool exec = false;  // instruction fetch (checked against XD)
  AtsType ats = AtsType::kUntranslated;
  // Out: the VT-d fault reason (0 = none); for kTranslationRequest the translation.
  int fault = 0;
  uint64_t translated_address = 0, page_size = 0;
  uint8_t perms = 0;

  // TLM's extension API hands ownership of clones around as raw pointers (freed by
  // tlm_extension_base::free), so this is the one place a plain new is the contract.
  tlm::tlm_extension_base *clone() const override { return new IommuExtension(*this); }
  void copy_from(const tlm::tlm_extension_base &other) override {
    *this = static_cast<const IommuExtension &>(other);
  }
};

class NestorIommu : public sc_core::sc_module {
 public:
  tlm_utils::multi_passthrough_target_socket<NestorIommu> dev_socket;
  tlm_utils::simple_initiator_socket<NestorIommu> mem_socket;

  // Translated requests (ATS) are trusted only if the embedder says the devices' context
  // entries enable device TLBs; nestor does not decide that for this model.
  NestorIommu(sc_core::sc_module_name name, nestor_engine *engine, bool allow_translated = true)
      : sc_module(name), dev_socket("dev_socket"), mem_socket("mem_socket"), e_(engine),
        allow_translated_(allow_translated) {
    dev_socket.register_b_transport(this, &NestorIommu::b_transport);
    dev_socket.register_get_direct_mem_ptr(this, &NestorIommu::get_direct_mem_ptr);
    dev_socket.register_transport_dbg(this, &NestorIommu::transport_dbg);
    mem_socket.register_invalidate_direct_mem_ptr(this, &NestorIommu::memory_revoked);
  }

  // The invalidation hook: every cache invalidation the platform performs (the vIOMMU's QI
  // handler, a VMM's unmap) goes through here so DMI grants can follow. Returns the
  // nestor_inv_submit / nestor_inv_wait error, 0 on success.
  int invalidate(const nestor_inv_op &op) {
    int rc = nestor_inv_submit(e_, &op);
    if (rc == 0) rc = nestor_inv_wait(e_);
    // Revoke even if the submit was refused: a stale grant costs a re-request, a kept one
    // costs isolation.
    revoke_covered(op);
    return rc;
  }

  size_t dmi_grants() const { return grants_.size(); }
  uint64_t revocations() const { return revocations_; }

 private:
  static constexpr uint64_t kPage = 4096;

  struct Grant {
    int socket;
    uint16_t source_id;
    bool has_pasid;
    uint32_t pasid;
    uint64_t iova_page, hpa_page;
  };

  static tlm::tlm_response_status response_for(int fault) {
    switch (fault) {
      case NESTOR_FAULT_FL_ENTRY_NOT_PRESENT:
      case NESTOR_FAULT_SL_ENTRY_NOT_PRESENT:
      case NESTOR_FAULT_FL_ADDRESS_BEYOND_GAW:
      case NESTOR_FAULT_NON_CANONICAL:
      case NESTOR_FAULT_ADDRESS_BEYOND_MAX:
      case NESTOR_FAULT_SL_ADDRESS_BEYOND_MAX:
        return tlm::TLM_ADDRESS_ERROR_RESPONSE;
      case NESTOR_FAULT_READ_DENIED:
      case NESTOR_FAULT_WRITE_DENIED:
      case NESTOR_FAULT_EXEC_DENIED:
      case NESTOR_FAULT_USER_DENIED:
      case NESTOR_FAULT_FL_ENTRY_WRITE_DENIED:
      case NESTOR_FAULT_FL_ENTRY_READ_DENIED:
        return tlm::TLM_COMMAND_ERROR_RESPONSE;
      default:
        return tlm::TLM_GENERIC_ERROR_RESPONSE;  // structures, reserved bits, memory errors
    }
  }

  // Translates the page holding `iova`; 0 or the fault reason.
  int translate(const IommuExtension &x, uint64_t iova, uint8_t access, nestor_result *res) {
    nestor_request req{};
    req.source_id = x.source_id;
    req.has_pasid = x.has_pasid;
    req.pasid = x.pasid;
    req.iova = iova;
    req.access = access;
    req.privileged = x.privileged;
    if (nestor_translate(e_, &req, res) != 0) return -1;
    return res->fault;
  }

  static uint8_t access_of(const tlm::tlm_generic_payload &t, const IommuExtension &x) {
    if (t.is_write()) return NESTOR_ACCESS_WRITE;
    return x.exec ? uint8_t(NESTOR_ACCESS_READ | NESTOR_ACCESS_EXEC) : uint8_t(NESTOR_ACCESS_READ);
  }

  void b_transport(int, tlm::tlm_generic_payload &t, sc_core::sc_time &delay) {
    IommuExtension *x = t.get_extension<IommuExtension>();
    if (!x || t.get_byte_enable_ptr() || t.get_streaming_width() < t.get_data_length()) {
      // No requester identity: the IOMMU cannot tell whose address space this is. Byte
      // enables and streaming are not modelled (they would need per-chunk slicing).
      t.set_response_status(tlm::TLM_GENERIC_ERROR_RESPONSE);
      return;
    }
    x->fault = 0;
    const uint64_t iova = t.get_address();
    if (x->ats == AtsType::kTranslated) {
      if (!allow_translated_) {
        t.set_response_status(tlm::TLM_COMMAND_ERROR_RESPONSE);
        return;
      }
      mem_socket->b_transport(t, delay);  // already host-physical
      return;
    }
    if (x->ats == AtsType::kTranslationRequest) {
      nestor_result r{};
      x->fault = translate(*x, iova, access_of(t, *x), &r);
      x->translated_address = r.hpa;
      x->page_size = r.page_size;
      x->perms = r.perms;
      t.set_response_status(x->fault ? response_for(x->fault) : tlm::TLM_OK_RESPONSE);
      return;
    }
    // Forward page by page: each chunk stays inside one translated page.
    unsigned char *data = t.get_data_ptr();
    const unsigned len = t.get_data_length();
    unsigned done = 0;
    while (done < len) {
      nestor_result r{};
      const int f = translate(*x, iova + done, access_of(t, *x), &r);
      if (f) {
        x->fault = f;
        t.set_address(iova);
        t.set_data_ptr(data);
        t.set_data_length(len);
        t.set_response_status(response_for(f));
        return;
      }
      const uint64_t in_page = r.page_size - ((iova + done) & (r.page_size - 1));
      const unsigned n = unsigned(std::min<uint64_t>(in_page, len - done));
      t.set_address(r.hpa);
      t.set_data_ptr(data + done);
      t.set_data_length(n);
      t.set_streaming_width(n);
      t.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
      mem_socket->b_transport(t, delay);
      if (!t.is_response_ok()) break;
      done += n;
    }
    const tlm::tlm_response_status st = t.get_response_status();
    t.set_address(iova);  // the initiator gets its payload back as it sent it
    t.set_data_ptr(data);
    t.set_data_length(len);
    t.set_streaming_width(len);
    t.set_response_status(st);
  }

  bool get_direct_mem_ptr(int socket, tlm::tlm_generic_payload &t, tlm::tlm_dmi &dmi) {
    IommuExtension *x = t.get_extension<IommuExtension>();
    const uint64_t page = t.get_address() & ~(kPage - 1);
    dmi.allow_read_write();
    dmi.set_start_address(page);
    dmi.set_end_address(page + kPage - 1);
    if (!x || x->ats != AtsType::kUntranslated) return false;
    nestor_result r{};
    // Ask for read first; write is granted only if the translation allows it.
    if (translate(*x, page, NESTOR_ACCESS_READ, &r) != 0) return false;
    const bool writable = r.perms & NESTOR_ACCESS_WRITE;
    const uint64_t hpa_page = r.hpa & ~(kPage - 1);
    tlm::tlm_generic_payload mt;
    tlm::tlm_dmi mem_dmi;
    mt.set_address(hpa_page);
    mt.set_command(writable ? tlm::TLM_WRITE_COMMAND : tlm::TLM_READ_COMMAND);
    if (!mem_socket->get_direct_mem_ptr(mt, mem_dmi)) return false;
    if (mem_dmi.get_start_address() > hpa_page || mem_dmi.get_end_address() < hpa_page + kPage - 1)
      return false;  // memory's region does not cover the whole page
    if (writable && !mem_dmi.is_write_allowed()) return false;
    dmi.set_dmi_ptr(mem_dmi.get_dmi_ptr() + (hpa_page - mem_dmi.get_start_address()));
    if (writable) {
      dmi.allow_read_write();
      // A write through DMI must not skip the dirty bit a translated write would have set.
      nestor_result w{};
      if (translate(*x, page, NESTOR_ACCESS_WRITE, &w) != 0) return false;
    } else {
      dmi.allow_read();
    }
    dmi.set_read_latency(mem_dmi.get_read_latency());
    dmi.set_write_latency(mem_dmi.get_write_latency());
    grants_.push_back({socket, x->source_id, x->has_pasid, x->pasid, page, hpa_page});
    return true;
  }

  unsigned transport_dbg(int, tlm::tlm_generic_payload &t) {
    // Debug access (a debugger reading device memory by IOVA): translated like any access,
    // at most one page, no timing. A fault returns 0 bytes (nestor still logs it).
    IommuExtension *x = t.get_extension<IommuExtension>();
    if (!x) return 0;
    nestor_result r{};
    const uint64_t iova = t.get_address();
    if (translate(*x, iova, access_of(t, *x), &r) != 0) return 0;
    const uint64_t in_page = r.page_size - (iova & (r.page_size - 1));
    tlm::tlm_generic_payload mt;
    mt.set_command(t.get_command());
    mt.set_address(r.hpa);
    mt.set_data_ptr(t.get_data_ptr());
    mt.set_data_length(unsigned(std::min<uint64_t>(in_page, t.get_data_length())));
    return mem_socket->transport_dbg(mt);
  }

  bool covered(const nestor_inv_op &op, const Grant &g) const {
    // Over-approximate: DIDs are not tracked per grant, so domain scope covers every grant.
    if (!(op.cache & (NESTOR_CACHE_CONTEXT | NESTOR_CACHE_PASID | NESTOR_CACHE_IOTLB |
                      NESTOR_CACHE_PAGING | NESTOR_CACHE_DEVTLB)))
      return false;
    switch (op.scope) {
      case NESTOR_SCOPE_DEVICE:
        return (g.source_id & ~7u) == (op.source_id & ~7u);  // any function mask
      case NESTOR_SCOPE_PASID:
        return !g.has_pasid || g.pasid == op.pasid;  // RID_PASID is unknown here: revoke
      case NESTOR_SCOPE_RANGE: {
        if (op.cache & (NESTOR_CACHE_CONTEXT | NESTOR_CACHE_PASID)) return true;
        if (g.has_pasid && g.pasid != op.pasid) return false;
        const uint64_t first = op.addr & ~(kPage - 1);
        const uint64_t pages = op.npages;
        // Page-granular overlap, written to avoid overflow near the top of the space.
        return g.iova_page >= first && (g.iova_page - first) / kPage < pages;
      }
      default:  // global, domain, unknown
        return true;
    }
  }

  void revoke_if(const std::vector<bool> &revoke) {
    std::vector<Grant> kept;
    for (size_t i = 0; i < grants_.size(); ++i) {
      const Grant &g = grants_[i];
      if (!revoke[i]) {
        kept.push_back(g);
        continue;
      }
      ++revocations_;
      dev_socket[g.socket]->invalidate_direct_mem_ptr(g.iova_page, g.iova_page + kPage - 1);
    }
    grants_.swap(kept);
  }

  void revoke_covered(const nestor_inv_op &op) {
    std::vector<bool> revoke(grants_.size());
    for (size_t i = 0; i < grants_.size(); ++i) revoke[i] = covered(op, grants_[i]);
    revoke_if(revoke);
  }

  void memory_revoked(sc_dt::uint64 start, sc_dt::uint64 end) {
    std::vector<bool> revoke(grants_.size());
    for (size_t i = 0; i < grants_.size(); ++i)
      revoke[i] = grants_[i].hpa_page <= end && grants_[i].hpa_page + kPage - 1 >= start;
    revoke_if(revoke);
  }

  nestor_engine *e_;
  bool allow_translated_;
  std::vector<Grant> grants_;
  uint64_t revocations_ = 0;
};

}  // namespace nestor_tlm
