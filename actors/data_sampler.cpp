#include "actors/data_sampler.hpp"

namespace zf::actors {
namespace {

sampler_actor::behavior_type data_sampler(sampler_actor::pointer self,
                                          std::shared_ptr<const storage::train_batches> batches,
                                          actor_spans sp) {
  (void)self;
  return {
      [=](train_atom, int64_t index, int32_t rank) -> batch_ptr {
        return sp.timed("batch", [&] {
          auto b = std::make_shared<storage::batch>();
          batches->fill_train(index, rank, *b);
          return b;
        });
      },
      [=](valid_atom, int64_t index) -> batch_ptr {  // the caller folds the rank into index
        return sp.timed("val_batch", [&] {
          auto b = std::make_shared<storage::batch>();
          batches->fill_val(index, *b);
          return b;
        });
      },
  };
}

}  // namespace

sampler_actor spawn_data_sampler(caf::actor_system& sys,
                                 std::shared_ptr<const storage::train_batches> batches,
                                 actor_spans spans) {
  return sys.spawn(data_sampler, std::move(batches), std::move(spans));
}

}  // namespace zf::actors
